//! Shared harness of the integration tests: real `raftgate serve` processes on loopback with
//! ephemeral ports, each with its own data directory and log file, plus a tiny real upstream.
//!
//! Every test builds its own [`Cluster`]; dropping it kills the processes, and when the test is
//! failing it prints the tail of every node's log so the failure can be understood from CI output.

// Each test binary compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use raftgate_client::{AdminClient, ClientError};
use raftgate_model::api::{AddMember, ClusterStatus, ErrorBody};
use raftgate_model::policy::LimitScope;
use raftgate_model::{Entity, NodeId, RateLimitSpec, RateWindow, RouteSpec, ServiceSpec, Target};

/// The binary under test, built by cargo for this integration test.
pub const BIN: &str = env!("CARGO_BIN_EXE_raftgate");

/// How long a node may take to start answering `/health`, or a cluster to agree on a leader.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 150;

/// Ports handed out are taken from below the kernel's ephemeral range (32768–60999 by default
/// on Linux): a port from that range, released for a node to bind, can meanwhile become the
/// source port of any outgoing connection and make the node fail to start.
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// Where this test process walks [`PORTS`] from; processes start at different places (by pid),
/// so concurrent test binaries rarely try the same ports.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// `n` distinct free loopback ports, checked by binding them (all held together, so none is
/// handed out twice), then released for the node to bind.
pub fn free_ports(n: usize) -> Vec<u16> {
    let span = PORTS.end - PORTS.start;
    let origin = std::process::id().wrapping_mul(2_654_435_761) % span;
    let mut held = Vec::with_capacity(n);
    for _ in 0..span {
        if held.len() == n {
            break;
        }
        let step = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = PORTS.start + (origin + step) % span;
        let port = u16::try_from(port).expect("ports are below 32000");
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    assert_eq!(held.len(), n, "no {n} free loopback ports in {PORTS:?}");
    held.iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// The three listening addresses of a node.
#[derive(Debug, Clone)]
pub struct Addrs {
    /// gRPC: Raft traffic and forwarding.
    pub cluster: SocketAddr,
    /// Admin HTTP API.
    pub admin: SocketAddr,
    /// Proxy.
    pub proxy: SocketAddr,
}

impl Addrs {
    fn allocate() -> Addrs {
        let ports = free_ports(3);
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        Addrs {
            cluster: at(ports[0]),
            admin: at(ports[1]),
            proxy: at(ports[2]),
        }
    }
}

/// One node: its addresses, data directory, log file and (while running) its process.
pub struct Node {
    /// Raft node id.
    pub id: NodeId,
    /// Listening addresses.
    pub addrs: Addrs,
    /// Admin client for this node (with the cluster's token, if any).
    pub client: AdminClient,
    data_dir: PathBuf,
    log: PathBuf,
    peers: Vec<(NodeId, SocketAddr)>,
    /// More `raftgate serve` arguments (see [`Cluster::set_args`]).
    args: Vec<String>,
    child: Option<Child>,
    starts: usize,
}

/// A set of raftgate processes sharing one temporary directory.
pub struct Cluster {
    dir: tempfile::TempDir,
    nodes: BTreeMap<NodeId, Node>,
    token: Option<String>,
}

impl Cluster {
    /// Plans nodes `ids` (addresses, data dirs, each knowing all of them as peers) without
    /// starting any; `token` is passed as `--admin-token` and used by every node's client.
    pub fn new(ids: &[NodeId], token: Option<&str>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("raftgate-test-")
            .tempdir()
            .expect("create a temporary directory");
        let mut cluster = Cluster {
            dir,
            nodes: BTreeMap::new(),
            token: token.map(str::to_owned),
        };
        let planned: Vec<(NodeId, Addrs)> = ids.iter().map(|&id| (id, Addrs::allocate())).collect();
        let peers: Vec<(NodeId, SocketAddr)> =
            planned.iter().map(|(id, a)| (*id, a.cluster)).collect();
        for (id, addrs) in planned {
            cluster.plan(id, addrs, peers.clone());
        }
        cluster
    }

    /// Starts nodes `ids` in the given order and waits until they agree on a leader, which it
    /// returns.
    pub async fn start(ids: &[NodeId], token: Option<&str>) -> (Cluster, NodeId) {
        Cluster::start_with(ids, token, &[]).await
    }

    /// [`Cluster::start`] for nodes that share `secret` (`--cluster-secret`), which seals
    /// provider credentials and JWT secrets.
    pub async fn start_with_secret(ids: &[NodeId], secret: &str) -> (Cluster, NodeId) {
        Cluster::start_with(ids, None, &["--cluster-secret", secret]).await
    }

    /// [`Cluster::start`] with extra `raftgate serve` arguments for every node.
    pub async fn start_with(
        ids: &[NodeId],
        token: Option<&str>,
        args: &[&str],
    ) -> (Cluster, NodeId) {
        let mut cluster = Cluster::new(ids, token);
        for &id in ids {
            cluster.set_args(id, args.iter().map(|a| a.to_string()).collect());
            cluster.spawn(id);
        }
        for &id in ids {
            cluster.wait_healthy(id).await;
        }
        let leader = cluster.wait_for_leader(ids).await;
        (cluster, leader)
    }

    fn plan(&mut self, id: NodeId, addrs: Addrs, peers: Vec<(NodeId, SocketAddr)>) {
        let data_dir = self.dir.path().join(format!("node-{id}"));
        let log = self.dir.path().join(format!("node-{id}.log"));
        let client = AdminClient::new(&addrs.admin.to_string(), self.token.clone())
            .expect("loopback address is a valid admin address")
            .with_timeout(Duration::from_secs(5));
        self.nodes.insert(
            id,
            Node {
                id,
                addrs,
                client,
                data_dir,
                log,
                peers,
                args: Vec::new(),
                child: None,
                starts: 0,
            },
        );
    }

    /// Plans a node that is not a member yet, knowing the current nodes as peers, and starts it.
    pub fn spawn_joiner(&mut self, id: NodeId) {
        self.plan_joiner(id);
        self.spawn(id);
    }

    /// Plans a node that is not a member yet, knowing the current nodes as peers, without
    /// starting it (so that [`Cluster::set_args`] can be called first).
    pub fn plan_joiner(&mut self, id: NodeId) {
        let peers: Vec<(NodeId, SocketAddr)> = self
            .nodes
            .values()
            .map(|n| (n.id, n.addrs.cluster))
            .collect();
        self.plan(id, Addrs::allocate(), peers);
    }

    /// Extra `raftgate serve` arguments for node `id` from its next start on (e.g. the cluster
    /// secret or TLS files).
    pub fn set_args(&mut self, id: NodeId, args: Vec<String>) {
        self.node_mut(id).args = args;
    }

    /// Everything node `id` has logged so far, over all its starts.
    pub fn log_text(&self, id: NodeId) -> String {
        std::fs::read_to_string(&self.node(id).log).unwrap_or_default()
    }

    /// Node `id`'s data directory (its Raft log and snapshots).
    pub fn data_dir(&self, id: NodeId) -> &Path {
        &self.node(id).data_dir
    }

    /// The cluster's temporary directory, for files a test hands to its nodes.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (or restarts, with the same data dir and addresses) node `id`; its stdout and
    /// stderr are appended to its log file.
    pub fn spawn(&mut self, id: NodeId) {
        let token = self.token.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open the node's log file");
        writeln!(log, "===== start #{} of node {id} =====", node.starts).expect("write log");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--cluster-addr")
            .arg(node.addrs.cluster.to_string())
            .arg("--admin-addr")
            .arg(node.addrs.admin.to_string())
            .arg("--proxy-addr")
            .arg(node.addrs.proxy.to_string());
        for (peer, addr) in &node.peers {
            cmd.arg("--peer").arg(format!("{peer}={addr}"));
        }
        cmd.args(&node.args);
        if let Some(token) = token {
            cmd.arg("--admin-token").arg(token);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let stderr = log.try_clone().expect("clone the log file handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        node.child = Some(cmd.spawn().expect("spawn raftgate serve"));
    }

    /// The process id of node `id` while it runs (to read its memory from `/proc`).
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.nodes[&id].child.as_ref().map(Child::id)
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        // An error here means the process already exited, which `wait` reports below.
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILLs every running node before reaping any, so that none outlives the others by more
    /// than a few microseconds.
    pub fn kill_all(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .values_mut()
            .filter_map(|n| n.child.take())
            .collect();
        for child in &mut children {
            let _ = child.kill();
        }
        for child in &mut children {
            let _ = child.wait();
        }
    }

    /// Restarts a killed node from its data directory and waits until it answers `/health`.
    pub async fn restart(&mut self, id: NodeId) {
        self.spawn(id);
        self.wait_healthy(id).await;
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// The admin client of node `id`.
    pub fn client(&self, id: NodeId) -> &AdminClient {
        &self.node(id).client
    }

    /// Ids of the nodes whose process is running.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// The body of `POST /cluster/members` for node `id`.
    pub fn add_member_body(&self, id: NodeId) -> AddMember {
        let a = &self.node(id).addrs;
        AddMember {
            id,
            cluster_addr: a.cluster.to_string(),
            admin_addr: a.admin.to_string(),
            proxy_addr: a.proxy.to_string(),
        }
    }

    /// Waits until node `id` answers `/health` with its own id; fails early if the process exits.
    pub async fn wait_healthy(&mut self, id: NodeId) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let node = self.node_mut(id);
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                node.child = None;
                panic!("node {id} exited during startup with {status}");
            }
            match node.client.health().await {
                Ok(h) if h.node_id == id && h.status == "ok" => return,
                Ok(h) => panic!("node {id} answered /health with {h:?}"),
                Err(e) if Instant::now() > deadline => {
                    panic!("node {id} not healthy after {STARTUP_TIMEOUT:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until every node in `ids` reports the same leader, itself one of `ids`.
    pub async fn wait_for_leader(&self, ids: &[NodeId]) -> NodeId {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let mut seen = Vec::new();
            for &id in ids {
                seen.push(match self.client(id).cluster_status().await {
                    Ok(s) => Ok(s.leader_id),
                    Err(e) => Err(e.to_string()),
                });
            }
            if let Some(Ok(Some(first))) = seen.first()
                && ids.contains(first)
                && seen.iter().all(|s| matches!(s, Ok(Some(l)) if l == first))
            {
                return *first;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among nodes {ids:?} after {STARTUP_TIMEOUT:?}; they report {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /cluster` on node `id`.
    pub async fn status(&self, id: NodeId) -> ClusterStatus {
        self.client(id)
            .cluster_status()
            .await
            .unwrap_or_else(|e| panic!("GET /cluster on node {id}: {e}"))
    }

    fn dump_logs(&self) {
        for node in self.nodes.values() {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!(
                "----- node {} log ({}), last {} of {} lines -----",
                node.id,
                node.log.display(),
                lines.len() - from,
                lines.len()
            );
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// Asserts `result` is an API error with `status` and returns its body.
pub fn api_error<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    status: StatusCode,
) -> ErrorBody {
    match result {
        Err(ClientError::Api { status: got, body }) if got == status => body,
        other => panic!("expected an error answer with status {status}, got {other:?}"),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or gives up after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real HTTP upstream that answers every request with its own name; stops when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it answers.
    pub name: String,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts an upstream on an ephemeral loopback port.
    pub async fn start(name: &str) -> Upstream {
        Upstream::start_with_delay(name, Duration::ZERO).await
    }

    /// Like [`Upstream::start`], answering each request after `delay`: a latency that
    /// dominates the measurement noise of a loaded machine.
    pub async fn start_with_delay(name: &str, delay: Duration) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let body = Bytes::from(name.to_owned());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req: Request<Incoming>| {
                        let body = body.clone();
                        async move {
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                        }
                    });
                    // A client hanging up mid-request is not the upstream's problem.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            name: name.to_owned(),
            task,
        }
    }

    /// `http://addr`, for a service target.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upstream answering every request with a JSON description of what it received:
/// `{"uri": …, "headers": {name: [values]}}`; stops when dropped.
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    /// Starts one on an ephemeral loopback port.
    pub async fn start() -> Echo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo upstream");
        let addr = listener.local_addr().expect("echo address");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<Incoming>| async move {
                        let mut headers = serde_json::Map::new();
                        for (name, value) in req.headers() {
                            let values = headers
                                .entry(name.as_str().to_string())
                                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                            if let serde_json::Value::Array(values) = values {
                                values.push(String::from_utf8_lossy(value.as_bytes()).into());
                            }
                        }
                        let body =
                            serde_json::json!({"uri": req.uri().to_string(), "headers": headers});
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body.to_string()),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Echo { addr, task }
    }

    /// `http://addr`, for a service target.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends plain requests through a node's proxy listener.
#[derive(Clone)]
pub struct ProxyClient {
    http: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl ProxyClient {
    /// A keep-alive client whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> ProxyClient {
        ProxyClient {
            http: Client::builder(TokioExecutor::new()).build_http(),
            timeout,
        }
    }

    /// `GET http://{proxy}{path}`: the status and body, or why there was no answer.
    pub async fn get(&self, proxy: SocketAddr, path: &str) -> Result<(StatusCode, String), String> {
        self.get_with_headers(proxy, path, &[]).await
    }

    /// Like [`ProxyClient::get`], sending `headers` too.
    pub async fn get_with_headers(
        &self,
        proxy: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, String), String> {
        let (status, _, body) = self.fetch(proxy, path, headers).await?;
        Ok((status, body))
    }

    /// Like [`ProxyClient::get_with_headers`], with the answer's headers.
    pub async fn fetch(
        &self,
        proxy: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, http::HeaderMap, String), String> {
        let uri = format!("http://{proxy}{path}");
        let exchange = async {
            let mut request = Request::get(&uri);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request
                .body(Empty::new())
                .map_err(|e| format!("bad request {uri}: {e}"))?;
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| format!("GET {uri}: {e:?}"))?;
            let (head, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("GET {uri} body: {e}"))?
                .to_bytes();
            Ok((
                head.status,
                head.headers,
                String::from_utf8_lossy(&body).into_owned(),
            ))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("GET {uri}: no answer within {:?}", self.timeout)))
    }
}

/// `GET /openapi.json` through `client`, parsed.
pub async fn openapi(client: &AdminClient) -> serde_json::Value {
    let (status, _, body) = client
        .request(
            http::Method::GET,
            "/openapi.json",
            None,
            http::HeaderMap::new(),
        )
        .await
        .expect("GET /openapi.json");
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice(&body).expect("the document is JSON")
}

/// Writes a service through node `via`, reads it back linearizably there, and checks that the
/// node reports itself ready (`GET /ready`): the cluster accepts writes.
pub async fn accepts_writes(cluster: &Cluster, via: NodeId, name: &str) {
    let client = cluster.client(via);
    let written = client
        .put(name, &service("http://127.0.0.1:9"), None)
        .await
        .unwrap_or_else(|e| panic!("write {name} through node {via}: {e}"));
    let read: Entity<ServiceSpec> = client
        .get_consistent::<ServiceSpec>(name)
        .await
        .unwrap_or_else(|e| panic!("consistent read of {name} on node {via}: {e}"));
    assert_eq!(read, written, "{name} on node {via}");
    let ready = client
        .ready()
        .await
        .unwrap_or_else(|e| panic!("GET /ready on node {via}: {e}"));
    assert_eq!(ready.node_id, via);
    assert!(
        ready.applied_index >= written.version,
        "ready at {ready:?}, before the write at {}",
        written.version
    );
}

/// A python3 that can import every module of `modules` (e.g. `["openai", "anthropic"]`): the
/// system's when it can, otherwise one of a virtualenv under the target directory, named
/// `venv`, where `packages` (pip requirement specifiers) are installed from PyPI once, so that
/// `cargo test` needs nothing installed by hand beyond python3.
pub fn python_with(modules: &[&str], venv: &str, packages: &[&str]) -> PathBuf {
    let import = format!("import {}", modules.join(", "));
    let can_import = |python: &Path| {
        Command::new(python)
            .args(["-c", &import])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    let system = PathBuf::from("python3");
    if can_import(&system) {
        return system;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(venv);
    let python = venv.join("bin/python3");
    if !can_import(&python) {
        let run = |cmd: &mut Command| cmd.output().is_ok_and(|out| out.status.success());
        let made = run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            && run(Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(packages));
        assert!(
            made && can_import(&python),
            "this test needs python3 with {packages:?}, and installing them into {} failed: run `pip install {}`",
            venv.display(),
            packages
                .iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    python
}

/// A one-target service spec.
pub fn service(url: &str) -> ServiceSpec {
    ServiceSpec {
        targets: vec![Target {
            url: url.to_owned(),
            weight: 1,
        }],
        ..Default::default()
    }
}

/// A route spec sending `path` (a prefix) to `service`.
pub fn route(service: &str, path: &str) -> RouteSpec {
    RouteSpec {
        service: service.to_owned(),
        paths: vec![path.to_owned()],
        hosts: vec![],
        methods: vec![],
        strip_path: false,
        ..Default::default()
    }
}

/// A rate limit of `limit` requests a minute per `scope`, sliding, failing closed.
pub fn per_minute(limit: u64, scope: LimitScope) -> RateLimitSpec {
    RateLimitSpec {
        limit,
        window: RateWindow::Minute,
        scope,
        fixed: false,
        fail_open: false,
        team: None,
    }
}
