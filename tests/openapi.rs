//! The admin API's OpenAPI document, as a real node serves it: valid OpenAPI 3.1 by
//! openapi-spec-validator, complete enough for a schema-driven fuzzer, and schemathesis,
//! driving every operation from it against the node, finds no server error, no answer the
//! document does not describe, no accepted input it calls invalid and no hang. The node still
//! accepts writes afterwards.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::{Cluster, accepts_writes, openapi};

const TOKEN: &str = "the-admin-token-of-this-test";

/// Examples per operation and phase: enough to reach every operation's error paths, few
/// enough for a few minutes on a debug build.
const EXAMPLES: u32 = 30;
/// The seed of the run, so that a failure in CI reproduces locally.
const SEED: u32 = 16;
/// The whole schemathesis run may take this long.
const RUN_LIMIT: Duration = Duration::from_secs(900);

/// python3 with schemathesis and openapi-spec-validator (`.ci/run` installs them).
fn python() -> PathBuf {
    support::python_with(
        &["schemathesis", "openapi_spec_validator"],
        "openapi-venv",
        &["schemathesis>=4.3,<5", "openapi-spec-validator>=0.7,<1"],
    )
}

/// Every operation of the document: (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item");
            item.iter()
                .map(move |(method, op)| (method.clone(), path.clone(), op.clone()))
        })
        .collect()
}

/// Every `$ref` in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi_3_1_and_complete_enough_to_fuzz() {
    let python = python();
    let (cluster, _) = Cluster::start(&[1], Some(TOKEN)).await;
    let doc = openapi(cluster.client(1)).await;
    assert_eq!(doc["openapi"], "3.1.0");

    let file = cluster.dir().join("openapi.json");
    std::fs::write(&file, doc.to_string()).expect("write the document");
    let out = std::process::Command::new(&python)
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "openapi-spec-validator refuses the document:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // What a validator does not demand but a fuzzer needs.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut all_refs = Vec::new();
    refs(&doc, &mut all_refs);
    for r in &all_refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(schemas.contains_key(name), "{r} is not defined");
    }
    let ops = operations(&doc);
    let ids: Vec<&str> = ops
        .iter()
        .map(|(m, p, op)| {
            op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{m} {p} has no operationId"))
        })
        .collect();
    let open = ["/health", "/ready", "/metrics"];
    for (method, path, op) in &ops {
        let at = format!("{method} {path}");
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{at}: no success answer"
        );
        if !open.contains(&path.as_str()) {
            assert!(responses.contains_key("401"), "{at}: no 401");
        }
        if method != "get" {
            assert!(responses.contains_key("403"), "{at}: no 403");
        }
        if op.get("requestBody").is_some() {
            assert!(responses.contains_key("413"), "{at}: no 413");
        }
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().expect("parameter name");
            assert!(
                p["schema"].is_object(),
                "{at}: parameter {name} has no schema"
            );
            if p["in"] == "path" && ["name", "service"].contains(&name) {
                assert_eq!(
                    p["schema"]["pattern"],
                    raftgate_admin::openapi::NAME_PATTERN,
                    "{at}: {name} without the name rule"
                );
                assert_eq!(p["schema"]["maxLength"], 128, "{at}: {name}");
            }
        }
        // Every `{parameter}` of the path is declared.
        for segment in path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(['{', '}']);
            assert!(
                op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == name && p["in"] == "path"),
                "{at}: path parameter {name} undeclared"
            );
        }
        for (status, response) in responses {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                let target = link["operationId"].as_str().unwrap_or_default();
                assert!(
                    ids.contains(&target),
                    "{at} {status}: link {name} to unknown operation {target:?}"
                );
            }
        }
    }
    // The example of a missing status, and the integers utoipa left unbounded.
    assert!(doc["paths"]["/consumers/{name}/keys"]["get"]["responses"]["404"].is_object());
    let limit = &schemas["RateLimitSpec"]["properties"]["limit"];
    assert_eq!(
        (&limit["format"], &limit["maximum"]),
        (&Value::from("uint64"), &Value::from(u64::MAX)),
        "{limit}"
    );
    assert_eq!(
        schemas["AddMember"]["properties"]["id"]["minimum"], 1,
        "{:?}",
        schemas["AddMember"]
    );
}

/// The fuzzer's summary, from its JSON report.
#[derive(Debug)]
struct Summary {
    operations: u64,
    tested: u64,
    generated: u64,
    failures: u64,
    errors: usize,
}

fn summary(report: &Path) -> Summary {
    let text = std::fs::read_to_string(report)
        .unwrap_or_else(|e| panic!("read the report {}: {e}", report.display()));
    let r: Value = serde_json::from_str(&text).expect("the report is JSON");
    let n = |v: &Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("a count, got {v}: {text}"))
    };
    Summary {
        operations: n(&r["operations"]["total"]),
        tested: n(&r["operations"]["tested"]),
        generated: n(&r["test_cases"]["generated"]),
        failures: n(&r["test_cases"]["with_failures"]),
        errors: r["errors"].as_array().map_or(usize::MAX, Vec::len),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_wrong_with_any_operation() {
    let python = python();
    let (cluster, _) = Cluster::start(&[1], Some(TOKEN)).await;
    accepts_writes(&cluster, 1, "before-fuzzing").await;
    let doc = openapi(cluster.client(1)).await;
    let admin = cluster.node(1).addrs.admin;
    let report = cluster.dir().join("schemathesis.json");
    let hooks = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/schemathesis"
    );
    let mut cmd = tokio::process::Command::new(&python);
    cmd.args(["-m", "schemathesis.cli", "run"])
        .arg(format!("http://{admin}/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", &EXAMPLES.to_string()])
        .args(["--seed", &SEED.to_string()])
        // Every check; but a 400 for input the schema allows is no contradiction of the
        // document, which says 400 for input the server refuses: references to resources
        // that do not exist, certificates that do not parse, a node that is not running.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        // A request unanswered this long is a hang.
        .args(["--request-timeout", "10"])
        .args(["--report", "json", "--report-json-path"])
        .arg(&report)
        .args(["--output-sanitize", "false"])
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", hooks)
        .current_dir(cluster.dir())
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_LIMIT:?}"))
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result = summary(&report);
    // Printed for the record (cargo test shows it with --nocapture, and on failure).
    println!("schemathesis: {result:?}");
    assert!(
        out.status.success() && result.failures == 0 && result.errors == 0,
        "schemathesis found problems ({result:?}):\n{stdout}\n{stderr}"
    );
    assert_eq!(
        result.operations,
        operations(&doc).len() as u64 - 1,
        "every operation but GET /openapi.json itself is selected: {result:?}"
    );
    assert_eq!(result.tested, result.operations, "{result:?}");
    assert!(result.generated >= result.operations * 10, "{result:?}");

    accepts_writes(&cluster, 1, "after-fuzzing").await;
    let log = cluster.log_text(1);
    assert!(!log.contains("panicked"), "the node panicked:\n{log}");
}
