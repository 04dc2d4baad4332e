//! `aether-run` as the app container runs it: the real binary supervising real `node`, on a
//! volume laid out as the fetcher lays it out (`.releases/<digest>`, `current`, the trigger).

use aether_testkit::{capture, free_port, node_available, require, wait_for, wait_until, PATIENCE};

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use aether_artifact::{trigger, Digest, RunState, RunnerStatus};

/// A server that answers `<version>` on `/`, `<version> slow` on `/slow` after 1.5 s, and exits
/// on `/crash`. `DELAY` ms before it listens; `CRASH` makes it exit 3 instead. It leaves marks
/// in its working directory (the volume) for the test to wait on: `started-<version>` gets a
/// line per start, `slow-<version>` appears when a slow request arrived.
fn app(version: &str, delay_ms: u64, crash: bool) -> String {
    format!(
        r#"const http = require('http');
const fs = require('fs');
fs.appendFileSync('started-{version}', 'x\n');
if ({crash}) {{ console.error('{version}: cannot start'); process.exit(3); }}
const server = http.createServer((req, res) => {{
  if (req.url === '/slow') {{
    fs.writeFileSync('slow-{version}', '');
    setTimeout(() => res.end('{version} slow'), 1500);
    return;
  }}
  if (req.url === '/main') {{ res.end(`${{require.main === module}} ${{process.argv[1]}} ${{__filename}}`); return; }}
  if (req.url === '/crash') {{ res.end('bye'); setTimeout(() => process.exit(1), 10); return; }}
  if (req.url === '/orphan') {{
    // sh exits at once; its background sleep is orphaned and answers with its pid.
    const sh = require('child_process').spawn('sh', ['-c', 'sleep 1 >/dev/null 2>&1 & echo $!'],
      {{ stdio: ['ignore', 'pipe', 'ignore'] }});
    let out = '';
    sh.stdout.on('data', (d) => out += d);
    sh.on('close', () => res.end(out.trim()));
    return;
  }}
  res.end('{version}');
}});
setTimeout(() => server.listen(process.env.PORT), {delay_ms});
"#
    )
}

struct Run {
    t: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    generation: u64,
    log: Arc<Mutex<String>>,
}

impl Run {
    /// Publishes `v1` and starts the supervisor on it, with extra environment for the app.
    fn start(extra_app: &str) -> Option<Run> {
        Run::start_with(extra_app, true)
    }

    fn start_with(extra_app: &str, warm: bool) -> Option<Run> {
        if !require(node_available(), "node is not installed") {
            return None;
        }
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("work/.releases")).unwrap();
        fs::create_dir_all(t.path().join("work/.reload")).unwrap();
        let mut r = Run {
            t,
            child: None,
            port: free_port(),
            generation: 0,
            log: Arc::default(),
        };
        r.publish("v1", &format!("{}{extra_app}", app("v1", 0, false)));
        let mut c = Command::new(env!("CARGO_BIN_EXE_aether-fetcher"))
            .args(["run", "--listen"])
            .arg(format!("127.0.0.1:{}", r.port))
            .arg("--watch")
            .arg(r.work().join(".reload"))
            .arg("--status-file")
            .arg(r.status_path())
            .args(["--grace", "1s", "--start-timeout", "4s", "--drain", "5s"])
            .args(["--warm", if warm { "true" } else { "false" }])
            .args(["--", "node", "current/server.js"])
            .current_dir(r.work())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        capture(c.stdout.take().unwrap(), r.log.clone());
        capture(c.stderr.take().unwrap(), r.log.clone());
        r.child = Some(c);
        // The shared socket answers a moment before aether-run has saved `Serving`: wait for
        // both, so every test starts from a recorded state.
        r.wait_for(
            |r| r.get("/").as_deref() == Some("v1") && r.serving(1),
            "v1 served and recorded",
        );
        Some(r)
    }

    fn work(&self) -> PathBuf {
        self.t.path().join("work")
    }

    fn status_path(&self) -> PathBuf {
        self.t.path().join("status.json")
    }

    fn status(&self) -> RunnerStatus {
        serde_json::from_slice(&fs::read(self.status_path()).unwrap()).unwrap()
    }

    /// The status, or `None` before aether-run first saved it.
    fn try_status(&self) -> Option<RunnerStatus> {
        serde_json::from_slice(&fs::read(self.status_path()).ok()?).ok()
    }

    /// Whether the saved status says generation `n` is served.
    fn serving(&self, n: u64) -> bool {
        self.try_status()
            .is_some_and(|s| s.state == RunState::Serving && s.generation == Some(n))
    }

    /// A mark the app left in its working directory (see `app`).
    fn mark(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.work().join(name)).ok()
    }

    /// What the fetcher does: a release directory, `current` swapped by rename, then the
    /// trigger rewritten in place.
    fn publish(&mut self, version: &str, server_js: &str) -> Digest {
        use sha2::Digest as _;
        let digest = Digest::from_bytes(sha2::Sha256::digest(version.as_bytes()).into());
        let rel = Path::new(".releases").join(digest.to_string());
        fs::create_dir_all(self.work().join(&rel)).unwrap();
        fs::write(self.work().join(&rel).join("server.js"), server_js).unwrap();
        let tmp = self.work().join(".current.tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&rel, &tmp).unwrap();
        fs::rename(&tmp, self.work().join("current")).unwrap();
        self.generation += 1;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.work().join(".reload/trigger"))
            .unwrap();
        f.write_all(trigger::line(&digest, self.generation, None).as_bytes())
            .unwrap();
        digest
    }

    fn get(&self, path: &str) -> Option<String> {
        get(self.port, path)
    }

    fn wait_for(&self, mut ok: impl FnMut(&Run) -> bool, what: &str) {
        wait_for(what, PATIENCE, || ok(self), || self.seen());
    }

    /// What a timed-out wait prints: the saved status and the supervisor's log.
    fn seen(&self) -> String {
        format!(
            "status: {:?}\n--- log ---\n{}",
            self.try_status(),
            self.log.lock().unwrap()
        )
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The app processes: every child but the standby node.
    fn app_processes(&self) -> Vec<u32> {
        let standby = self.status().standby_pid;
        children_of(self.pid())
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| Some(*p) != standby)
            .collect()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The app processes lead their own groups; take them down first.
            for (pid, _) in children_of(c.id()) {
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// One request on a fresh connection: `None` when it failed in any way.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Requests every 5 ms on fresh connections until stopped: (answers, failures). `made` counts
/// the requests as they complete, for a test to wait on.
fn load(
    port: u16,
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
) -> thread::JoinHandle<(Vec<String>, usize)> {
    thread::spawn(move || {
        let (mut ok, mut failed) = (Vec::new(), 0);
        while !stop.load(Ordering::Relaxed) {
            match get(port, "/") {
                Some(b) => ok.push(b),
                None => failed += 1,
            }
            made.fetch_add(1, Ordering::Relaxed);
            thread::sleep(Duration::from_millis(5)); // pace: a request every 5 ms
        }
        (ok, failed)
    })
}

/// Both ways of carrying connections: node accepting from aether-run's socket (the default
/// for node), and the forwarder (any command; `--warm false`).
#[test]
fn switches_releases_without_dropping_a_request() {
    for shared in [true, false] {
        switches_without_dropping(shared);
    }
}

fn switches_without_dropping(shared: bool) {
    let Some(mut r) = Run::start_with("", shared) else {
        return;
    };
    assert_eq!(
        r.log.lock().unwrap().contains("node listens on it"),
        shared,
        "{}",
        r.log.lock().unwrap()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let client = load(r.port, stop.clone(), made.clone());
    for n in 2..=6 {
        let v = format!("v{n}");
        let d = r.publish(&v, &app(&v, 0, false));
        // The new node accepts from the shared socket a moment before aether-run has read
        // its "listening" and saved the status, so wait for both.
        r.wait_for(
            |r| r.get("/").as_deref() == Some(&v) && r.status().digest == Some(d),
            &v,
        );
        let s = r.status();
        assert_eq!((s.digest, s.generation), (Some(d), Some(n)));
        assert_eq!(s.state, RunState::Serving);
    }
    // Some requests on the last release too, after the last switch.
    let after = made.load(Ordering::Relaxed) + 10;
    wait_for(
        "10 more requests after the last switch",
        PATIENCE,
        || made.load(Ordering::Relaxed) >= after,
        || made.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    let (answers, failed) = client.join().unwrap();
    assert_eq!(
        failed,
        0,
        "shared socket {shared}: {failed} of {} requests failed during 5 switches\n{}",
        answers.len() + failed,
        r.log.lock().unwrap()
    );
    assert!(
        answers.len() > 20,
        "the client made {} requests",
        answers.len()
    );
    assert!(answers.iter().all(|a| a.starts_with('v')), "{answers:?}");
    let s = r.status();
    assert_eq!((s.swaps, s.restarts), (5, 0));
    // Every replaced process was drained and stopped: the live node (and the standby) left.
    r.wait_for(
        |r| r.app_processes().len() == 1 && r.status().standby_pid.is_some() == shared,
        "the old processes to be stopped",
    );
    assert_eq!(r.app_processes(), [s.pid.unwrap()]);
}

/// The standby node loads the release of the moment it is told to, and the app sees what a
/// plain `node current/server.js` would: it is the main module, argv[1] is the entry point.
#[test]
fn a_standby_node_runs_the_app_as_its_main_module() {
    for warm in [true, false] {
        let Some(mut r) = Run::start_with("", warm) else {
            return;
        };
        let d = r.publish("v2", &app("v2", 0, false));
        r.wait_for(|r| r.get("/").as_deref() == Some("v2"), "v2 served");
        let entry = r.work().join("current/server.js");
        let real = r.work().join(format!(".releases/{d}/server.js"));
        assert_eq!(
            r.get("/main").unwrap(),
            format!("true {} {}", entry.display(), real.display()),
            "warm {warm}"
        );
        // v1 drained and gone; the standby there only when asked for.
        r.wait_for(
            |r| {
                r.status().standby_pid.is_some() == warm
                    && children_of(r.pid()).len() == if warm { 2 } else { 1 }
            },
            "the live node, and the standby as configured",
        );
        // Idle means idle: reading the trigger is not a change to react to (notify reports
        // opens, and reacting to them rewrote the status hundreds of times a second). The
        // drained process's exit may still be saved once; after that, a 500 ms window in which
        // the status file is not replaced must come. The window observes an absence: it orders
        // nothing.
        use std::os::unix::fs::MetadataExt as _;
        let inode = || fs::metadata(r.status_path()).unwrap().ino();
        wait_until(
            "an idle aether-run to stop rewriting its status",
            PATIENCE,
            || {
                let before = inode();
                thread::sleep(Duration::from_millis(500)); // window: an absence is observed
                let after = inode();
                if after == before {
                    Ok(())
                } else {
                    Err(format!(
                        "status replaced within 500 ms (inode {before} -> {after})"
                    ))
                }
            },
        );
    }
}

#[test]
fn a_slow_starting_release_takes_over_only_when_it_listens() {
    let Some(mut r) = Run::start("") else { return };
    r.publish("v2", &app("v2", 2000, false));
    // The new process has started and waits 2 s before it listens; the old one answers
    // meanwhile.
    r.wait_for(
        |r| r.mark("started-v2").is_some() && r.app_processes().len() == 2,
        "v2 started beside v1",
    );
    assert_eq!(r.get("/").as_deref(), Some("v1"));
    r.wait_for(
        |r| r.get("/").as_deref() == Some("v2") && r.status().swaps == 1,
        "v2 served and recorded",
    );
}

#[test]
fn a_release_that_crashes_on_start_leaves_the_old_one_serving() {
    let Some(mut r) = Run::start("") else { return };
    let bad = r.publish("v2", &app("v2", 0, true));
    r.wait_for(
        |r| r.status().failed_digest == Some(bad),
        "the failure reported",
    );
    let s = r.status();
    let msg = s.last_failure.unwrap();
    assert!(
        msg.contains("exited with status 3 before it listened"),
        "{msg}"
    );
    assert!(msg.contains("keeps serving"), "{msg}");
    // In the app's own words, not only the supervisor's.
    assert!(
        msg.contains(r#"its stderr ended: "v2: cannot start""#),
        "{msg}"
    );
    assert_eq!(s.generation, Some(1));
    assert_eq!(r.get("/").as_deref(), Some("v1"));
    r.wait_for(|r| r.app_processes().len() == 1, "v2 reaped");
    // It is not retried in a loop: the next release is, and v2 started exactly once.
    let v3 = r.publish("v3", &app("v3", 0, false));
    r.wait_for(
        |r| r.get("/").as_deref() == Some("v3") && r.status().digest == Some(v3),
        "v3 served and recorded",
    );
    let s = r.status();
    assert_eq!((s.last_failure, s.failed_digest), (None, None));
    assert_eq!(
        r.mark("started-v2").as_deref(),
        Some("x\n"),
        "v2 was retried"
    );
}

#[test]
fn a_release_that_never_listens_is_abandoned_at_the_start_timeout() {
    let Some(mut r) = Run::start("") else { return };
    let bad = r.publish("v2", &app("v2", 60_000, false));
    r.wait_for(
        |r| r.status().failed_digest == Some(bad),
        "the failure reported",
    );
    let msg = r.status().last_failure.unwrap();
    assert!(
        msg.contains("did not listen on its PORT within 4s"),
        "{msg}"
    );
    assert_eq!(r.get("/").as_deref(), Some("v1"));
    r.wait_for(|r| r.app_processes().len() == 1, "v2 killed");
}

#[test]
fn a_request_in_flight_completes_on_the_old_release_across_a_switch() {
    for shared in [true, false] {
        let Some(mut r) = Run::start_with("", shared) else {
            return;
        };
        let port = r.port;
        let slow = thread::spawn(move || get(port, "/slow"));
        r.wait_for(
            |r| r.mark("slow-v1").is_some(),
            "v1 to have the slow request",
        );
        r.publish("v2", &app("v2", 0, false));
        r.wait_for(|r| r.get("/").as_deref() == Some("v2"), "v2 served");
        assert_eq!(
            slow.join().unwrap().as_deref(),
            Some("v1 slow"),
            "shared {shared}"
        );
    }
}

#[test]
fn a_crashed_app_is_restarted_in_place_and_waiting_requests_are_served() {
    let Some(r) = Run::start("") else { return };
    let before = r.status().pid;
    assert_eq!(r.get("/crash").as_deref(), Some("bye"));
    r.wait_for(|r| r.status().restarts == 1, "the restart counted");
    // A request made while the app is down waits for the restarted process.
    assert_eq!(r.get("/").as_deref(), Some("v1"));
    // The restarted node answers from the shared socket a moment before aether-run has read
    // its "listening" and saved `Serving`.
    r.wait_for(|r| r.serving(1), "the restarted app recorded as serving");
    let s = r.status();
    assert!(
        s.last_exit
            .as_deref()
            .unwrap()
            .contains("exited with status 1"),
        "{s:?}"
    );
    assert_ne!(s.pid, before);
    assert_eq!(s.state, RunState::Serving);
}

/// PID 1 duties: orphans of the app are reaped, and SIGTERM ends everything even when the app
/// ignores it (`--grace 1s`, then SIGKILL).
#[test]
fn reaps_orphans_and_stops_after_the_grace_period_on_sigterm() {
    let Some(mut r) = Run::start("process.on('SIGTERM', () => console.log('ignoring SIGTERM'));\n")
    else {
        return;
    };
    let orphan: u32 = r.get("/orphan").unwrap().parse().unwrap();
    // `sleep` lost its parent (sh exited before the answer) and was reparented to aether-run,
    // its subreaper: it is aether-run's child until it exits, and then it is reaped (a
    // zombie would stay in /proc).
    let parent = |pid: u32| -> Option<(u32, char)> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let mut f = stat.rsplit_once(')')?.1.split_whitespace();
        let state = f.next()?.chars().next()?;
        Some((f.next()?.parse().ok()?, state))
    };
    if let Some((ppid, _)) = parent(orphan) {
        assert_eq!(ppid, r.pid(), "the orphan was not reparented to aether-run");
    }
    wait_until("the orphan to be reaped", PATIENCE, || {
        match parent(orphan) {
            None => Ok(()),
            Some(seen) => Err(seen),
        }
    });
    let node = r.status().pid.unwrap();
    let t0 = Instant::now();
    unsafe { libc::kill(r.pid() as i32, libc::SIGTERM) };
    // The app ignores SIGTERM: only the grace period (1 s) and SIGKILL end it. Without them this
    // would never return; the bound is loose so a busy machine passes.
    let child = r.child.as_mut().unwrap();
    let status = wait_until("aether-run to exit after SIGTERM", PATIENCE, || {
        child.try_wait().unwrap().ok_or("still running")
    });
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "the grace period was skipped: {took:?}"
    );
    assert!(!status.success(), "killed app: {status:?}");
    assert!(
        !Path::new(&format!("/proc/{node}")).exists(),
        "node {node} outlived aether-run"
    );
    assert!(r.log.lock().unwrap().contains("ignoring SIGTERM"));
    r.child = None;
}

/// Direct children of `pid`: (pid, state letter).
fn children_of(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // `pid (comm) S ppid …`; comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.next().and_then(|s| s.parse::<u32>().ok()) == Some(pid) {
            out.push((p, state));
        }
    }
    out
}

/// Without the loader (a forwarder), an app that listens on a port of its own fails within
/// about a second, naming that port and the setting, not at the start timeout.
#[test]
fn a_release_on_another_port_fails_naming_it() {
    let Some(mut r) = Run::start_with("", false) else {
        return;
    };
    let fixed = free_port();
    let bad = r.publish(
        "v2",
        &format!("require('http').createServer((q, s) => s.end('v2')).listen({fixed});\n"),
    );
    r.wait_for(
        |r| r.status().failed_digest == Some(bad),
        "the failure reported",
    );
    let msg = r.status().last_failure.unwrap();
    assert!(
        msg.contains(&format!("listens on port {fixed}, not on its PORT"))
            && msg.contains(&format!("\"aether\": {{\"port\": {fixed}}}")),
        "{msg}"
    );
    assert_eq!(r.get("/").as_deref(), Some("v1"));
}
