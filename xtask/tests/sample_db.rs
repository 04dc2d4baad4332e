//! The sample's database check (`templates/sample-node/db.js`) against a real Postgres: a query
//! answers `ok` with the right password; a wrong one and a closed port give the real cause.

use aether_testkit::postgres::{bin_dir, Postgres};
use aether_testkit::{node_available, require};

fn check(url: &str) -> String {
    let db_js = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/sample-node/db.js");
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg(format!(
            "require({db_js:?}).query1(process.env.URL).then(v => console.log(v), e => console.log('error: ' + e.message))"
        ))
        .env("URL", url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_sample_queries_postgres_with_scram() {
    if !require(node_available(), "node is not installed")
        || !require(bin_dir().is_some(), "Postgres is not installed")
    {
        return;
    }
    let pg = Postgres::start();
    assert_eq!(check(&pg.url()), "ok");
    let wrong = pg.url().replace(&pg.password, "not-the-password");
    let got = check(&wrong);
    assert!(got.contains("password authentication failed"), "{got}");
    let closed = format!(
        "postgres://aether:x@127.0.0.1:{}/postgres",
        aether_testkit::free_port()
    );
    let got = check(&closed);
    assert!(got.contains("ECONNREFUSED"), "{got}");
}
