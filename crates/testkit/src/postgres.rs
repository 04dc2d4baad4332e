//! A real Postgres for tests, from this machine's Debian `postgresql` package (`cargo xtask
//! test` installs it): initdb into a temporary directory, a server on a free loopback port with
//! a SCRAM password, stopped when dropped. Postgres refuses to run as root, so as root (CI) it
//! runs as `nobody`.

use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The bin directory of the newest installed server, if any.
pub fn bin_dir() -> Option<PathBuf> {
    let mut majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    majors.sort();
    majors
        .into_iter()
        .rev()
        .map(|m| PathBuf::from(format!("/usr/lib/postgresql/{m}/bin")))
        .find(|b| b.join("postgres").exists())
}

pub struct Postgres {
    child: Child,
    pub port: u16,
    pub password: String,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Starts a server whose user `aether` (password [`Postgres::password`]) owns database
    /// `postgres`; panics when Postgres is not installed (check [`bin_dir`] first).
    pub fn start() -> Postgres {
        let bin = bin_dir().expect("Postgres is not installed: apt-get install postgresql");
        let dir = tempfile::tempdir().unwrap();
        let nobody = crate::is_root().then_some(65534u32);
        if let Some(uid) = nobody {
            chown(dir.path(), Some(uid), Some(uid)).unwrap();
        }
        let password = format!("pw-{}", std::process::id());
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, format!("{password}\n")).unwrap();
        if let Some(uid) = nobody {
            chown(&pwfile, Some(uid), Some(uid)).unwrap();
        }
        let data = dir.path().join("data");
        let as_user = |c: &mut Command| {
            if let Some(uid) = nobody {
                c.uid(uid).gid(uid);
            }
        };
        let mut init = Command::new(bin.join("initdb"));
        init.args([
            "-U",
            "aether",
            "--auth=scram-sha-256",
            "--locale=C",
            "-E",
            "UTF8",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .arg("-D")
        .arg(&data)
        .current_dir(dir.path());
        as_user(&mut init);
        let out = init.output().expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::free_port();
        let mut server = Command::new(bin.join("postgres"));
        server
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "jit=off"])
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir.path())
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut server);
        let child = server.spawn().expect("starting postgres");
        let pg = Postgres {
            child,
            port,
            password,
            _dir: dir,
        };
        crate::wait_for(
            "postgres to accept connections",
            crate::PATIENCE,
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            || data_log(&data),
        );
        pg
    }

    /// `postgres://aether:<password>@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!(
            "postgres://aether:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }
}

fn data_log(data: &Path) -> String {
    format!("data directory {}", data.display())
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: Postgres' "fast" shutdown, so the temporary directory can go.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}
