//! `aether-run` against what it replaced, in the same run: requests failed while the app
//! switches releases (node restarting in place under `node --watch-path` against aether-run's
//! start-beside-and-switch), trigger → new version served, and the forwarder's cost against a
//! direct connection to the same node process (latency, and throughput with 50 keep-alive
//! clients).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use aether_artifact::{trigger, volume, Digest, FetcherEnv};
use anyhow::{bail, Context, Result};
use sha2::Digest as _;
use xshell::Shell;

use super::{p50_p95, secs};
use crate::proc::kill_group;

pub fn run(sh: &Shell, work: &Path, swaps: usize) -> Result<()> {
    let fetcher = crate::targets::local::fetcher_bin(sh)?;
    let vol = Volume::new(&work.join("supervisor"))?;
    vol.publish("v0", 0)?;

    // What the app container ran before: node restarting itself on the trigger.
    let port = crate::proc::free_port()?;
    let watch = format!(
        "--watch-path={}",
        vol.dir.join(volume::RELOAD_DIR).display()
    );
    let old = spawn_node(&vol, port, &[&watch, "--watch-preserve-output"])?;
    let restarting = (|| {
        wait_body(port, "v0")?;
        swap_cycles(&vol, port, 1, swaps)
    })();
    kill_group(old.id())?;
    let restarting = restarting?;

    // aether-run on the same volume.
    let port = crate::proc::free_port()?;
    let sup = spawn_run(&fetcher, &vol, port, true)?;
    let measured = (|| {
        wait_body(port, &format!("v{swaps}"))?;
        swap_cycles(&vol, port, swaps + 1, swaps)
    })();
    let switching = match measured {
        Ok(c) => c,
        Err(e) => {
            kill_group(sup.id())?;
            return Err(e);
        }
    };
    // What connections cost on the way: a plain node on its own port against aether-run in
    // both modes, on the same release, measured alternately.
    let last = format!("v{}", 2 * swaps);
    let direct_port = crate::proc::free_port()?;
    let direct = spawn_node(&vol, direct_port, &[])?;
    let fwd_port = crate::proc::free_port()?;
    let fwd = spawn_run(&fetcher, &vol, fwd_port, false)?;
    let overhead = (|| {
        wait_body(direct_port, &last)?;
        wait_body(fwd_port, &last)?;
        compare([direct_port, port, fwd_port])
    })();
    for pid in [sup.id(), direct.id(), fwd.id()] {
        kill_group(pid)?;
    }
    let (lat, tput) = overhead?;

    println!();
    println!("aether-run, {swaps} release switches each, a client requesting every 5 ms on new connections");
    for (name, c) in [
        ("node --watch-path (restart in place, before)", &restarting),
        ("aether-run (start beside, then switch)", &switching),
    ] {
        println!(
            "  {name:<46} failed {:>4} of {:>5}; trigger → served {}",
            c.failed,
            c.requests,
            p50_p95(&c.served)
        );
    }
    println!(
        "  connections, a plain node on its own port against the same release through aether-run (one run, ports taking turns):"
    );
    println!(
        "    {:<52} latency p50 {:.3} ms, p95 {:.3} ms; throughput (50 keep-alive clients, best of 3) {:.0} req/s",
        "plain node", lat[0].0, lat[0].1, tput[0]
    );
    for (i, name) in [
        (1, "node accepting from aether-run's socket (node apps)"),
        (2, "aether-run's forwarder (other commands, --warm false)"),
    ] {
        println!(
            "    {name:<52} latency p50 {:.3} ms, p95 {:.3} ms (+{:.3} ms p50; goal ≤ +0.2); throughput {:.0} req/s ({:.0}%; goal ≥ 90%)",
            lat[i].0,
            lat[i].1,
            lat[i].0 - lat[0].0,
            tput[i],
            100.0 * tput[i] / tput[0]
        );
    }
    Ok(())
}

/// `node [flags] current/server.js` on `vol` at `port`, in its own process group.
fn spawn_node(vol: &Volume, port: u16, flags: &[&str]) -> Result<std::process::Child> {
    Command::new("node")
        .args(flags)
        .arg("current/server.js")
        .env("PORT", port.to_string())
        .current_dir(&vol.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting node")
}

/// `aether-run` on `vol` at `port`: node accepting from its socket (`warm`), or its forwarder.
fn spawn_run(fetcher: &Path, vol: &Volume, port: u16, warm: bool) -> Result<std::process::Child> {
    Command::new(fetcher)
        .arg("run")
        .env(FetcherEnv::RUN_LISTEN, format!("127.0.0.1:{port}"))
        .env(FetcherEnv::RUN_WATCH, vol.dir.join(volume::RELOAD_DIR))
        .env(FetcherEnv::RUN_WARM, warm.to_string())
        .args(["--", "node", "current/server.js"])
        .current_dir(&vol.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting aether-run")
}

/// A volume laid out as the fetcher lays it out.
struct Volume {
    dir: PathBuf,
}

impl Volume {
    fn new(dir: &Path) -> Result<Volume> {
        fs::create_dir_all(dir.join(volume::RELEASES))?;
        fs::create_dir_all(dir.join(volume::RELOAD_DIR))?;
        Ok(Volume {
            dir: dir.to_path_buf(),
        })
    }

    /// A release directory, `current` renamed over, then the trigger rewritten in place.
    fn publish(&self, version: &str, generation: u64) -> Result<()> {
        let d = Digest::from_bytes(sha2::Sha256::digest(version.as_bytes()).into());
        let rel = Path::new(volume::RELEASES).join(d.to_string());
        fs::create_dir_all(self.dir.join(&rel))?;
        fs::write(
            self.dir.join(&rel).join("server.js"),
            format!(
                "require('http').createServer((q, s) => s.end('{version}')).listen(process.env.PORT);\n"
            ),
        )?;
        let tmp = self.dir.join(".current.tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&rel, &tmp)?;
        fs::rename(&tmp, self.dir.join(volume::CURRENT))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join(volume::RELOAD_TRIGGER))?;
        f.write_all(trigger::line(&d, generation, None).as_bytes())?;
        Ok(())
    }
}

/// Between two saves. Saves closer together than a node boot (~120 ms here) find the standby
/// still booting and pay the rest of its start.
pub const PAUSE: Duration = Duration::from_secs(1);

struct Cycles {
    served: Vec<Duration>,
    requests: usize,
    failed: usize,
}

/// `n` releases, each published once the previous one is served, under a client requesting
/// every 5 ms on fresh connections.
fn swap_cycles(vol: &Volume, port: u16, first: usize, n: usize) -> Result<Cycles> {
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                match get(port) {
                    Some(_) => ok += 1,
                    None => failed += 1,
                }
                thread::sleep(Duration::from_millis(5));
            }
            (ok, failed)
        })
    };
    let mut served = Vec::new();
    let r = (|| {
        thread::sleep(Duration::from_millis(100));
        for i in first..first + n {
            let v = format!("v{i}");
            let t0 = Instant::now();
            vol.publish(&v, i as u64)?;
            wait_body(port, &v)?;
            served.push(t0.elapsed());
            // A developer's pause between saves: past node --watch's own settling, and time
            // for aether-run's standby node to boot, so each switch is measured on its own.
            thread::sleep(PAUSE);
        }
        Ok::<_, anyhow::Error>(())
    })();
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = client.join().expect("the client thread");
    r?;
    served.sort();
    Ok(Cycles {
        served,
        requests: ok + failed,
        failed,
    })
}

fn wait_body(port: u16, want: &str) -> Result<()> {
    let t0 = Instant::now();
    while get(port).as_deref() != Some(want) {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("port {port} did not serve {want:?} within 30 s");
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// One request on a fresh connection: the body on a 200, `None` on any failure.
fn get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// A keep-alive HTTP/1.1 client for bodies with a Content-Length (node's `res.end(text)`).
struct KeepAlive {
    r: BufReader<TcpStream>,
    w: TcpStream,
    line: String,
    body: Vec<u8>,
}

impl KeepAlive {
    fn connect(port: u16) -> Result<KeepAlive> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        Ok(KeepAlive {
            w: s.try_clone()?,
            r: BufReader::new(s),
            line: String::new(),
            body: Vec::new(),
        })
    }

    fn request(&mut self) -> Result<()> {
        self.w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut len = None;
        loop {
            self.line.clear();
            if self.r.read_line(&mut self.line)? == 0 {
                bail!("connection closed");
            }
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                }
            }
        }
        self.body.resize(len.context("no Content-Length")?, 0);
        self.r.read_exact(&mut self.body)?;
        Ok(())
    }
}

/// [direct, through] (p50, p95) latency in ms, and [direct, through] requests per second,
/// measured alternately so drift affects both alike.
/// (p50, p95) in ms.
type Pcts = (f64, f64);
/// Per port, (p50, p95) latency of one keep-alive client, and the best requests per second of
/// 50 keep-alive clients; the ports take turns in every round, so drift hits all alike.
fn compare<const N: usize>(ports: [u16; N]) -> Result<([Pcts; N], [f64; N])> {
    let mut lat: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::new());
    let mut conns = Vec::new();
    for p in ports {
        conns.push(KeepAlive::connect(p)?);
    }
    for _ in 0..500 {
        for c in conns.iter_mut() {
            c.request()?; // warm-up
        }
    }
    for _ in 0..10 {
        for (i, c) in conns.iter_mut().enumerate() {
            for _ in 0..300 {
                let t = Instant::now();
                c.request()?;
                lat[i].push(t.elapsed());
            }
        }
    }
    let mut pct = [(0.0, 0.0); N];
    for (i, l) in lat.iter_mut().enumerate() {
        l.sort();
        let at = |p: f64| secs(l[((l.len() as f64 - 1.0) * p).round() as usize]) * 1000.0;
        pct[i] = (at(0.5), at(0.95));
    }
    for p in ports {
        throughput(p, 50, Duration::from_secs(1))?; // warm-up under load
    }
    let mut tput = [0.0f64; N];
    for _ in 0..3 {
        for (i, port) in ports.iter().enumerate() {
            tput[i] = tput[i].max(throughput(*port, 50, Duration::from_secs(2))?);
        }
    }
    Ok((pct, tput))
}

fn throughput(port: u16, clients: usize, for_: Duration) -> Result<f64> {
    let deadline = Instant::now() + for_;
    let t0 = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            thread::spawn(move || -> Result<u64> {
                let mut c = KeepAlive::connect(port)?;
                let mut n = 0;
                while Instant::now() < deadline {
                    c.request()?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().expect("a client thread")?;
    }
    Ok(total as f64 / t0.elapsed().as_secs_f64())
}
