//! `raftgate dev`: a complete local cluster in one command — three `raftgate serve` processes on
//! loopback, an example upstream, and a service and route that send the proxy's traffic to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use raftgate_client::AdminClient;
use raftgate_model::{RouteSpec, ServiceSpec, Target};
use tokio::process::{Child, Command};

use crate::CliError;

/// Ports and place of the local cluster.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Node i (1..3) uses admin port ADMIN+i-1, proxy port PROXY+i-1 and cluster port CLUSTER+i-1.
    #[arg(long, default_value_t = 9091)]
    admin_port: u16,
    /// First proxy port.
    #[arg(long, default_value_t = 8081)]
    proxy_port: u16,
    /// First cluster (Raft) port.
    #[arg(long, default_value_t = 7071)]
    cluster_port: u16,
    /// Port of the example upstream.
    #[arg(long, default_value_t = 9099)]
    upstream_port: u16,
    /// Where the nodes keep their data and logs (a fresh temporary directory by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

const NODES: u16 = 3;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The example upstream: answers every request with a small JSON document describing it.
async fn upstream(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let body = serde_json::json!({
                    "hello": "from the example upstream",
                    "method": req.method().as_str(),
                    "path": req.uri().path(),
                    "x_forwarded_for": req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()),
                    "x_request_id": req.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
                });
                let mut response = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok::<_, std::convert::Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Runs the local cluster until Ctrl-C.
pub async fn run(args: DevArgs) -> Result<(), CliError> {
    let dir = match args.dir.clone() {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("raftgate-dev-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(CliError::io(format!("creating {}", dir.display())))?;
    let exe = std::env::current_exe().map_err(CliError::io("finding the raftgate executable"))?;

    let upstream_addr = addr(args.upstream_port);
    let listener = tokio::net::TcpListener::bind(upstream_addr)
        .await
        .map_err(CliError::io(format!(
            "example upstream cannot listen on {upstream_addr} (use --upstream-port)"
        )))?;
    tokio::spawn(upstream(listener));

    let peers: Vec<String> = (0..NODES)
        .map(|i| format!("{}={}", i + 1, addr(args.cluster_port + i)))
        .collect();
    let secrets_key = secrets_key_file(&dir)?;
    let mut children: Vec<Child> = Vec::new();
    for i in 0..NODES {
        let id = i + 1;
        let log = std::fs::File::create(dir.join(format!("node{id}.log")))
            .map_err(CliError::io("creating a node log file"))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(dir.join(format!("node{id}")))
            .args(["--cluster-addr", &addr(args.cluster_port + i).to_string()])
            .args(["--admin-addr", &addr(args.admin_port + i).to_string()])
            .args(["--proxy-addr", &addr(args.proxy_port + i).to_string()]);
        for p in &peers {
            cmd.args(["--peer", p]);
        }
        cmd.arg("--secrets-key-file").arg(&secrets_key);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        children.push(
            cmd.spawn()
                .map_err(CliError::io("starting a raftgate node"))?,
        );
    }

    let result = configure(&args, upstream_addr, &dir).await;
    if result.is_ok() {
        let _ = tokio::signal::ctrl_c().await;
        println!("\nstopping the cluster (data kept in {})", dir.display());
    }
    for child in &mut children {
        let _ = child.kill().await;
    }
    result
}

/// The dev cluster's key for AI provider credentials: made once from the OS's random source
/// and kept with the data, so credentials stored in an earlier run still open.
fn secrets_key_file(dir: &std::path::Path) -> Result<std::path::PathBuf, CliError> {
    use std::io::Read;
    let path = dir.join("secrets.key");
    if !path.exists() {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(CliError::io("reading /dev/urandom for the dev secrets key"))?;
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, text).map_err(CliError::io("writing the dev secrets key"))?;
    }
    Ok(path)
}

async fn configure(
    args: &DevArgs,
    upstream: SocketAddr,
    dir: &std::path::Path,
) -> Result<(), CliError> {
    let client = AdminClient::new(&addr(args.admin_port).to_string(), None)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.cluster_status().await {
            Ok(s) if s.leader_id.is_some() => break,
            _ if Instant::now() > deadline => {
                return Err(CliError::Config(format!(
                    "the cluster did not elect a leader within 20 s; see the node logs in {}",
                    dir.display()
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let service = ServiceSpec {
        targets: vec![Target {
            url: format!("http://{upstream}"),
            weight: 1,
        }],
        ..Default::default()
    };
    client.put("example", &service, None).await?;
    let route = RouteSpec {
        service: "example".into(),
        paths: vec!["/".into()],
        hosts: vec![],
        methods: vec![],
        strip_path: false,
        ..Default::default()
    };
    client.put("example", &route, None).await?;

    println!(
        "raftgate dev cluster is up (data and logs in {})",
        dir.display()
    );
    for i in 0..NODES {
        println!(
            "  node {}: admin http://{}  proxy http://{}  cluster {}",
            i + 1,
            addr(args.admin_port + i),
            addr(args.proxy_port + i),
            addr(args.cluster_port + i)
        );
    }
    println!("  example upstream: http://{upstream}  (service 'example', route 'example' on /)");
    println!();
    println!("try:");
    println!("  curl http://{}/hello", addr(args.proxy_port + 1));
    println!("  curl http://{}/cluster", addr(args.admin_port + 2));
    println!(
        "  raftgate get routes --admin {}",
        addr(args.admin_port + 1)
    );
    println!("press Ctrl-C to stop");
    Ok(())
}
