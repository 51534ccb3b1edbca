//! The README's API-management walk-through, run as written: `raftgate dev` starts a local
//! three-node cluster (on free ports rather than the defaults), and the README's block of
//! commands runs in bash against it — team, API, OpenAPI import, publish, subscribe, approve,
//! call, deprecate, retire. Each step's answer is checked in the order the README shows them.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::BIN;

/// Where the README marks the walk-through's commands.
const START: &str = "<!-- walkthrough:start -->";
const END: &str = "<!-- walkthrough:end -->";

/// The shell commands of the README's walk-through block.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let from = readme
        .find(START)
        .expect("README has the walk-through start marker");
    let to = readme
        .find(END)
        .expect("README has the walk-through end marker");
    let block = &readme[from + START.len()..to];
    let code = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(code, _)| code)
        .expect("the walk-through is one ```sh block");
    code.to_string()
}

/// A first port such that `first..first + n` are all free on loopback.
fn free_run(n: u16, avoid: &[u16]) -> u16 {
    for _ in 0..200 {
        let first: u16 = 20_000 + (rand_u16() % 30_000);
        let ports = first..first + n;
        if ports.clone().any(|p| avoid.contains(&p)) {
            continue;
        }
        if ports
            .clone()
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            return first;
        }
    }
    panic!("no run of {n} free ports");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (std::process::id() << 7)) as u16
}

/// `raftgate dev`, stopped with Ctrl-C (which stops its nodes) when dropped.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
    }
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let admin = free_run(3, &[]);
    let proxy = free_run(3, &[admin, admin + 1, admin + 2]);
    let cluster = free_run(
        3,
        &[admin, admin + 1, admin + 2, proxy, proxy + 1, proxy + 2],
    );
    let upstream = support::free_ports(1)[0];
    let dir = tempfile::tempdir().expect("temporary directory");
    let dev = Dev(Command::new(BIN)
        .arg("dev")
        .args(["--admin-port", &admin.to_string()])
        .args(["--proxy-port", &proxy.to_string()])
        .args(["--cluster-port", &cluster.to_string()])
        .args(["--upstream-port", &upstream.to_string()])
        .arg("--dir")
        .arg(dir.path().join("cluster"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start raftgate dev"));
    // `raftgate dev` writes its example route once the cluster is up.
    let ready = (0..400).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{}/routes/example", admin)])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(ready, "raftgate dev did not configure its example route");

    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &walkthrough()])
        .env("A", format!("http://127.0.0.1:{admin}"))
        .env("P", format!("http://127.0.0.1:{}", proxy + 1))
        .current_dir(dir.path())
        .output()
        .expect("run bash");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the walk-through failed: {}\nstdout:\n{out}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // What each step shows, in order.
    let expected = [
        "\"error\":\"not_subscribed\"",
        "\"state\":\"pending\"",
        "\"state\":\"active\"",
        "HTTP/1.1 200",
        "link: </orders/v2>; rel=\"successor-version\"",
        "deprecation: @",
        "sunset: wed, 01 jan 2031 00:00:00 gmt",
        "HTTP/1.1 410",
        "\"error\":\"retired\"",
    ];
    let mut at = 0;
    for step in expected {
        match out[at..]
            .to_ascii_lowercase()
            .find(&step.to_ascii_lowercase())
        {
            Some(i) => at += i + step.len(),
            None => panic!("the walk-through's output lacks {step:?} after byte {at}:\n{out}"),
        }
    }
    drop(dev);
}
