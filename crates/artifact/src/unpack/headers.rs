//! A cap on the tar extension headers (GNU long names and links, PAX records) before the tar
//! crate sees them: it reads each one whole into memory, so a crafted header of a gigabyte
//! would exhaust a fetcher with a 128 MiB memory limit long before the byte cap or the digest
//! could stop it. This reader follows the tar framing of the decompressed stream (512-byte
//! headers, data padded to 512) and fails as soon as such a header announces more than
//! [`MAX_EXTENSION`] bytes.

use std::io::{self, Read};

/// The largest GNU long-name/long-link or PAX header accepted: a path is at most 4 KiB on
/// Linux, and a PAX record set of a real archive is a few hundred bytes.
pub const MAX_EXTENSION: u64 = 64 << 10;

const BLOCK: usize = 512;

pub(super) struct HeaderCap<R> {
    inner: R,
    header: [u8; BLOCK],
    /// Bytes of the current header seen so far.
    have: usize,
    /// Bytes of entry data (with padding) still to pass before the next header.
    data_left: u64,
}

impl<R: Read> HeaderCap<R> {
    pub(super) fn new(inner: R) -> HeaderCap<R> {
        HeaderCap {
            inner,
            header: [0; BLOCK],
            have: 0,
            data_left: 0,
        }
    }

    pub(super) fn into_inner(self) -> R {
        self.inner
    }

    /// Follows the framing over `bytes`, which just passed through.
    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.data_left > 0 {
                let n = (self.data_left.min(bytes.len() as u64)) as usize;
                self.data_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (BLOCK - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == BLOCK {
                self.have = 0;
                let size = entry_size(&self.header);
                let kind = self.header[156];
                if matches!(kind, b'L' | b'K' | b'x' | b'g') && size > MAX_EXTENSION {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "a {} header of {size} bytes (at most {MAX_EXTENSION} are accepted)",
                            if matches!(kind, b'L' | b'K') {
                                "GNU long-name"
                            } else {
                                "PAX"
                            }
                        ),
                    ));
                }
                self.data_left = size.div_ceil(BLOCK as u64) * BLOCK as u64;
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for HeaderCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

/// The size field: octal ASCII, or GNU base-256 (high bit set) for large sizes. A value that
/// does not parse counts as huge for extension headers; the tar crate reports it otherwise.
fn entry_size(h: &[u8; BLOCK]) -> u64 {
    let field = &h[124..136];
    if field[0] & 0x80 != 0 {
        let (high, low) = field.split_at(4);
        if high[0] & 0x7f != 0 || high[1..].iter().any(|b| *b != 0) {
            return u64::MAX;
        }
        return low.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    }
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return 0;
    }
    u64::from_str_radix(text, 8).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h
    }

    fn pass(stream: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut r = HeaderCap::new(stream);
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn small_extension_headers_and_large_files_pass() {
        let mut s = header(b'L', 300);
        s.extend(vec![b'a'; 512]);
        s.extend(header(b'0', 3 * 512 + 1));
        s.extend(vec![b'x'; 4 * 512]);
        s.extend(vec![0u8; 1024]);
        for chunk in [1, 7, 512, 4096] {
            assert_eq!(pass(&s, chunk).unwrap(), s, "chunk {chunk}");
        }
    }

    #[test]
    fn a_huge_long_name_or_pax_header_fails_before_its_data() {
        for kind in [b'L', b'K', b'x', b'g'] {
            let mut s = header(b'0', 10);
            s.extend(vec![b'x'; 512]);
            s.extend(header(kind, MAX_EXTENSION + 1));
            let e = pass(&s, 100).unwrap_err();
            assert!(e.to_string().contains("at most 65536"), "{e}");
        }
        // A base-256 size too large for 64 bits.
        let mut h = header(b'x', 0);
        h[124] = 0x80;
        h[125] = 1;
        assert!(pass(&h, 512).is_err());
    }
}
