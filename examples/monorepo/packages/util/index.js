'use strict';
// A sibling package: in the repository it is a link in the root's node_modules.
exports.shout = (s) => `${s.toUpperCase()}!`;
