//! The web console at `/ui/`, in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`) against a real three-node cluster with a
//! bootstrap admin token. Signing in (and a wrong token refused), creating a service and a route
//! through the forms and seeing every node's proxy serve the route, a field error shown next to
//! its field, a concurrent edit answered by "changed by someone else — reload", and a killed
//! node shown as down. Also how the files are served (CSP, gzip, caching, no token needed for
//! them and only them), that the token never reaches a cookie or a URL, and that a 360 px wide
//! window needs no horizontal scrolling. Screenshots of every page go to `results/console/`.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use http::StatusCode;
use raftgate_model::api::NodeState;
use raftgate_model::{NodeId, RouteSpec, ServiceSpec};
use serde_json::{Value, json};
use support::{Cluster, ProxyClient, Upstream, eventually};

const TOKEN: &str = "the-console-test-admin-token";

/// How long the page may take to show what a step waits for.
const PAGE_TIMEOUT: Duration = Duration::from_secs(15);

/// The budget for every console and portal file, gzip-compressed.
const SIZE_BUDGET: usize = 250 * 1024;

/// chromedriver and the Chromium it drives. Chromedriver runs in a process group of its own, so
/// that dropping this (a failing test) kills the browser with it.
struct Browser {
    client: Option<Client>,
    driver: Child,
}

impl Browser {
    async fn start() -> Browser {
        let port = support::free_ports(1)[0];
        let mut command = Command::new("chromedriver");
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run chromedriver ({e}): install Debian's chromium and chromium-driver")
        });
        let mut browser = Browser {
            client: None,
            driver,
        };
        let url = format!("http://127.0.0.1:{port}");
        let capabilities: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--window-size=1280,900",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                ],
            },
        }))
        .expect("capabilities are an object");
        // chromedriver takes a moment to listen; a session it refuses is an error to show.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let attempt =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities.clone())
                    .connect(&url)
                    .await;
            match attempt {
                Ok(client) => {
                    browser.client = Some(client);
                    return browser;
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("chromedriver gives no Chromium session within 20 s: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Ends the session (Chromium quits), then chromedriver.
    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            client.close().await.expect("end the WebDriver session");
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and, when a failing test never closed the session, the
        // browser it started.
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.driver.wait();
    }
}

/// Where the screenshots go: `results/console/` at the workspace root (git-ignored).
fn results_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../results/console");
    std::fs::create_dir_all(&dir).expect("create results/console");
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("take a screenshot");
    let path = results_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// The text of every element `css` matches, joined by newlines.
async fn texts(client: &Client, css: &str) -> String {
    let value = client
        .execute(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent).join('\\n');",
            vec![json!(css)],
        )
        .await
        .expect("run a script in the page");
    value.as_str().unwrap_or_default().to_string()
}

/// How many elements `css` matches.
async fn count(client: &Client, css: &str) -> u64 {
    client
        .execute(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(css)],
        )
        .await
        .expect("run a script in the page")
        .as_u64()
        .unwrap_or_default()
}

/// Waits until an element `css` matches says `needle`; returns what they say.
async fn wait_text(client: &Client, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let seen = texts(client, css).await;
        if seen.contains(needle) {
            return seen;
        }
        if Instant::now() > deadline {
            let url = client.current_url().await.map(|u| u.to_string());
            screenshot(client, "failure").await;
            panic!("after {PAGE_TIMEOUT:?}, `{css}` says {seen:?}, not {needle:?} (page {url:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn find(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element `{css}`: {e}"))
}

async fn click(client: &Client, css: &str) {
    find(client, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
}

/// Replaces what the input `css` holds with `text`.
async fn fill(client: &Client, css: &str, text: &str) {
    let input = find(client, css).await;
    input.clear().await.expect("clear an input");
    input
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into `{css}`: {e}"));
}

/// Runs `script` in the page and answers its value.
async fn eval(client: &Client, script: &str) -> Value {
    client
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("run `{script}`: {e}"))
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

/// The console's files as a browser gets them: the index and every file it names, each with
/// the policy, nosniff and gzip; immutable caching for the hashed ones, revalidation by ETag.
/// Returns the total compressed size. Without a token exactly these files answer.
async fn check_files(admin: std::net::SocketAddr) -> usize {
    let http = ProxyClient::new(Duration::from_secs(5));
    let gzip = [("accept-encoding", "gzip")];
    let (status, _, html) = http.fetch(admin, "/ui/", &[]).await.expect("GET /ui/");
    assert_eq!(status, StatusCode::OK);
    let mut names: Vec<String> = Vec::new();
    for attribute in ["href=\"", "src=\""] {
        for piece in html.split(attribute).skip(1) {
            let name = piece.split('"').next().unwrap_or_default();
            if (name.ends_with(".js") || name.ends_with(".css")) && !names.iter().any(|n| n == name)
            {
                names.push(name.to_string());
            }
        }
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("app.") && n.ends_with(".js"))
            && names.iter().any(|n| n.ends_with(".css")),
        "the index names its script and stylesheet: {names:?}"
    );

    let mut total = 0;
    let mut paths = vec!["/ui/".to_string()];
    paths.extend(names.iter().map(|n| format!("/ui/{n}")));
    for path in &paths {
        let (status, headers, _) = http.fetch(admin, path, &gzip).await.expect("GET a file");
        assert_eq!(status, StatusCode::OK, "{path}");
        let csp = header(&headers, "content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert_eq!(header(&headers, "content-encoding"), "gzip", "{path}");
        let cache = header(&headers, "cache-control");
        if path == "/ui/" {
            assert_eq!(cache, "no-cache");
        } else {
            assert_eq!(cache, "public, max-age=31536000, immutable", "{path}");
        }
        let length: usize = header(&headers, "content-length")
            .parse()
            .expect("a length");
        total += length;
        let etag = header(&headers, "etag").to_string();
        let (status, _, _) = http
            .fetch(
                admin,
                path,
                &[("accept-encoding", "gzip"), ("if-none-match", &etag)],
            )
            .await
            .expect("revalidate");
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{path} with {etag}");
    }

    let (status, headers, _) = http.fetch(admin, "/ui", &[]).await.expect("GET /ui");
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&headers, "location"), "/ui/");
    for (path, why) in [
        ("/services", "the API needs the token"),
        ("/cluster/nodes", "the API needs the token"),
        ("/ui/missing.js", "only the console's own files are open"),
    ] {
        let (status, _, _) = http.fetch(admin, path, &[]).await.expect("GET");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {why}");
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_manages_a_cluster_in_a_real_browser() {
    let (mut cluster, leader) = Cluster::start(&[1, 2, 3], Some(TOKEN)).await;
    let upstream = Upstream::start("served-through-the-console").await;
    let admin = cluster.node(1).addrs.admin;
    let console = format!("http://{admin}/ui/");

    let compressed = check_files(admin).await;
    eprintln!(
        "console assets: {compressed} bytes ({:.1} KiB) gzip-compressed in all",
        compressed as f64 / 1024.0
    );
    assert!(
        compressed < SIZE_BUDGET,
        "{compressed} bytes is over the budget"
    );

    let browser = Browser::start().await;
    let client = browser.client();

    // The first page, cold: the sign-in form.
    client.goto(&console).await.expect("open the console");
    find(client, "#token").await;
    let loaded = eval(
        client,
        "const n = performance.getEntriesByType('navigation')[0]; \
         return [n.domContentLoadedEventEnd - n.startTime, n.loadEventEnd - n.startTime];",
    )
    .await;
    let dom_content_loaded = loaded[0].as_f64().expect("a time");
    eprintln!(
        "first page: DOMContentLoaded after {dom_content_loaded:.1} ms, load after {:.1} ms",
        loaded[1].as_f64().unwrap_or_default()
    );
    assert!(
        dom_content_loaded > 0.0 && dom_content_loaded < 2000.0,
        "DOMContentLoaded after {dom_content_loaded} ms"
    );
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("#/signin"),
        "a visitor without a token is sent to sign in"
    );
    screenshot(client, "signin").await;

    // A wrong token is refused, and kept nowhere.
    fill(client, "#token", "not-the-token").await;
    click(client, "form.signin button[type=submit]").await;
    wait_text(client, "#token-error", "refused that token").await;
    assert_eq!(
        eval(client, "return sessionStorage.length;").await,
        json!(0)
    );
    screenshot(client, "signin-refused").await;

    // The right one signs in and lands on the cluster page: three ready members.
    fill(client, "#token", TOKEN).await;
    click(client, "form.signin button[type=submit]").await;
    wait_text(client, "main h1", "Cluster").await;
    let ready = eventually(PAGE_TIMEOUT, || async {
        (count(client, "tr[data-state=ready]").await == 3).then_some(())
    })
    .await;
    assert!(ready.is_some(), "three ready members on the cluster page");
    wait_text(client, &format!("tr[data-node=\"{leader}\"]"), "leader").await;
    screenshot(client, "cluster").await;

    // The token is in this tab's session storage and nowhere else.
    let kept = eval(
        client,
        "return [sessionStorage.getItem('raftgate.console.token'), document.cookie, localStorage.length, location.href];",
    )
    .await;
    assert_eq!(kept[0], json!(TOKEN));
    assert_eq!(kept[1], json!(""), "no cookie");
    assert_eq!(kept[2], json!(0), "nothing in local storage");
    assert!(!kept[3].as_str().unwrap().contains(TOKEN), "not in the URL");
    let cookies = client.get_all_cookies().await.expect("read the cookies");
    assert!(cookies.is_empty(), "the browser holds cookies: {cookies:?}");

    // A service through the form.
    click(client, "nav a[href='#/services']").await;
    wait_text(client, "main", "No services yet").await;
    screenshot(client, "services-empty").await;
    click(client, "#new-service").await;
    fill(client, "form [data-field=name] input", "web").await;
    fill(
        client,
        "[data-field='targets[0].url'] input",
        &upstream.url(),
    )
    .await;
    screenshot(client, "service-new").await;
    click(client, "form button[type=submit]").await;
    wait_text(client, ".banner-ok", "Saved service “web”").await;
    wait_text(client, "#services-table", &upstream.url()).await;
    screenshot(client, "services").await;

    // A route through the form: a bad path is named next to the paths field.
    click(client, "nav a[href='#/routes']").await;
    click(client, "#new-route").await;
    fill(client, "form [data-field=name] input", "web").await;
    find(client, "[data-field=service] select")
        .await
        .select_by_value("web")
        .await
        .expect("choose the service");
    fill(client, "[data-field=paths] textarea", "/web\nnope").await;
    click(client, "form button[type=submit]").await;
    let error = wait_text(
        client,
        "[data-field=paths] > .field-error",
        "must start with /",
    )
    .await;
    assert!(error.contains("Path 2 (“nope”)"), "{error}");
    let invalid = find(client, "[data-field=paths] textarea").await;
    assert_eq!(
        invalid.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    assert!(
        cluster.client(2).get::<RouteSpec>("web").await.is_err(),
        "nothing was written"
    );
    screenshot(client, "route-field-error").await;
    fill(client, "[data-field=paths] textarea", "/web").await;
    click(client, "form button[type=submit]").await;
    wait_text(client, ".banner-ok", "Saved route “web”").await;
    screenshot(client, "routes").await;

    // Every node's proxy serves it.
    let proxy = ProxyClient::new(Duration::from_secs(5));
    for id in [1, 2, 3] {
        let at = cluster.node(id).addrs.proxy;
        let served = eventually(Duration::from_secs(10), || async {
            match proxy.get(at, "/web/hello").await {
                Ok((StatusCode::OK, body)) if body == upstream.name => Some(()),
                _ => None,
            }
        })
        .await;
        assert!(served.is_some(), "node {id}'s proxy serves /web");
    }

    // The list's search finds it by path and hides it for another word.
    fill(client, "#search-routes", "/web").await;
    wait_text(client, "main", "1 of 1 routes match").await;
    fill(client, "#search-routes", "nothing-like-it").await;
    wait_text(client, "main", "0 of 1 routes match").await;
    assert_eq!(
        eval(
            client,
            "return document.querySelector('tr[data-name=web]').hidden;"
        )
        .await,
        json!(true)
    );

    // Someone changes the route after the form read it: saving answers 412, said as such.
    client
        .goto(&format!("{console}#/routes/edit/web"))
        .await
        .expect("open the route's form");
    let priority = "[data-field=priority] input";
    find(client, priority).await;
    let api = cluster.client(2);
    let stored = api.get::<RouteSpec>("web").await.expect("read the route");
    let mut changed = stored.spec.clone();
    changed.priority = 5;
    api.put("web", &changed, Some(stored.version))
        .await
        .expect("change the route through the API");
    fill(client, priority, "7").await;
    click(client, "form button[type=submit]").await;
    wait_text(
        client,
        "main .banner-error",
        "changed by someone else — reload",
    )
    .await;
    screenshot(client, "route-conflict").await;
    assert_eq!(
        api.get::<RouteSpec>("web").await.unwrap().spec.priority,
        5,
        "the stale form did not overwrite the change"
    );
    // Reloading shows the current version, which then saves.
    click(client, "main .banner-error button").await;
    let reloaded = eventually(PAGE_TIMEOUT, || async {
        let input = client.find(Locator::Css(priority)).await.ok()?;
        let value = input.prop("value").await.ok()??;
        (value == "5").then_some(())
    })
    .await;
    assert!(reloaded.is_some(), "the reloaded form shows priority 5");
    fill(client, priority, "7").await;
    click(client, "form button[type=submit]").await;
    wait_text(client, ".banner-ok", "Saved route “web”").await;
    assert_eq!(api.get::<RouteSpec>("web").await.unwrap().spec.priority, 7);

    // Deleting from the list: a service still routed to is refused with the API's reason, a
    // stale row is refused as changed by someone else, and a current one goes.
    let spare = support::service("http://127.0.0.1:9");
    let first = api
        .put("spare", &spare, Some(0))
        .await
        .expect("create a service");
    click(client, "nav a[href='#/services']").await;
    wait_text(client, "tbody", "spare").await;
    click(client, "tr[data-name=web] .btn-danger").await;
    click(client, "tr[data-name=web] .btn-danger").await;
    wait_text(client, "main .banner-error", "Cannot delete “web”").await;
    api.put("spare", &spare, Some(first.version))
        .await
        .expect("change the service through the API");
    click(client, "tr[data-name=spare] .btn-danger").await;
    click(client, "tr[data-name=spare] .btn-danger").await;
    wait_text(
        client,
        "main .banner-error",
        "changed by someone else — reload",
    )
    .await;
    screenshot(client, "service-delete-conflict").await;
    assert!(api.get::<ServiceSpec>("spare").await.is_ok(), "not deleted");
    click(client, "main .banner-error button").await;
    wait_text(client, "tbody", "spare").await;
    click(client, "tr[data-name=spare] .btn-danger").await;
    click(client, "tr[data-name=spare] .btn-danger").await;
    wait_text(client, ".banner-ok", "Deleted service “spare”").await;
    assert_eq!(count(client, "tr[data-name=spare]").await, 0);
    assert_eq!(
        api.get::<ServiceSpec>("spare").await.unwrap_err().status(),
        Some(StatusCode::NOT_FOUND)
    );

    // 360 px wide: the pages fit without horizontal scrolling.
    client.set_window_size(360, 800).await.expect("resize");
    for (page, shot) in [
        ("#/routes", "routes-360"),
        ("#/services", "services-360"),
        ("#/routes/edit/web", "route-form-360"),
        ("#/cluster", "cluster-360"),
    ] {
        client
            .goto(&format!("{console}{page}"))
            .await
            .expect("open a page");
        match page {
            "#/routes" | "#/services" => {
                wait_text(client, "tbody", "web").await;
            }
            "#/cluster" => {
                wait_text(client, "tbody", "node 3").await;
            }
            _ => {
                find(client, priority).await;
            }
        }
        let widths = eval(
            client,
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth, window.innerWidth];",
        )
        .await;
        let (scroll, width) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(
            widths[2].as_u64().unwrap() <= 360,
            "the window is 360 px wide: {widths}"
        );
        assert!(
            scroll <= width,
            "{page} scrolls sideways at 360 px: {scroll} px of content in {width} px"
        );
        screenshot(client, shot).await;
    }
    client.set_window_size(1280, 900).await.expect("resize");

    // A killed node shows as down (not as an error page) on the cluster page.
    let victim: NodeId = if leader == 3 { 2 } else { 3 };
    cluster.kill(victim);
    client
        .goto(&format!("{console}#/cluster"))
        .await
        .expect("open the cluster page");
    let row = format!("tr[data-node=\"{victim}\"][data-state=down]");
    wait_text(client, &row, "Down").await;
    let nodes = cluster
        .client(1)
        .cluster_nodes()
        .await
        .expect("GET /cluster/nodes");
    let down: Vec<NodeId> = nodes
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Down)
        .map(|n| n.id)
        .collect();
    assert_eq!(down, vec![victim], "{nodes:?}");
    assert_eq!(
        count(client, "tr[data-state=ready]").await,
        2,
        "the two others are ready"
    );
    screenshot(client, "cluster-node-down").await;

    // Signing out forgets the token.
    click(client, "#sign-out").await;
    find(client, "#token").await;
    assert_eq!(
        eval(
            client,
            "return sessionStorage.getItem('raftgate.console.token');"
        )
        .await,
        Value::Null
    );
    wait_text(client, "main", "Signed out").await;
    browser.close().await;
}
