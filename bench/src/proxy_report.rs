//! The proxy benchmark's table: each path's figures over the rounds, the raftgate/nginx ratios,
//! the cost of a large route table and raftgate's memory, each against its target.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::load::{LoadReport, ProxyPath};
use crate::report::{mean, median, verdict};

/// Largest loss of throughput accepted from the smallest to the largest route table.
const MAX_ROUTE_LOSS: f64 = 0.10;

/// Memory budget of a node with the largest route table, in MiB.
const RSS_TARGET_MIB: f64 = 64.0;

/// Cores used by other processes above which a run is flagged as disturbed.
const DISTURBED_CORES: f64 = 0.25;

/// Largest relative difference of the upstream's CPU per request between the two runs a round
/// compares for them to count as run at the same machine speed. The upstream does the same work
/// per request behind either proxy; when its cost (and wrk's) jumps between the two runs, the
/// machine itself slowed down or sped up in between (a shared host), not the proxy.
const SAME_SPEED: f64 = 0.10;

/// Runs grouped by path, route count and raftgate variant; within a group, by round.
type Groups<'a> = BTreeMap<(ProxyPath, Option<usize>, Option<String>), Vec<&'a LoadReport>>;

/// The raftgate variants `bench/proxy` can measure beside raftgate as it ships, and how each
/// is compared with it: (variant, what the ratio says, whether the variant is the numerator,
/// the least ratio accepted).
const VARIANTS: [(&str, &str, bool, Option<f64>); 3] = [
    // Analytics are on by default: the variant turns them off, so shipped/variant is the cost.
    ("no-analytics", "analytics on/off", false, Some(0.97)),
    ("access-log", "access log to a file/off", true, Some(0.95)),
    ("tracing", "tracing at 100% (OTLP)/off", true, None),
];

/// The proxy section of the report.
pub fn table(runs: &[&LoadReport]) -> String {
    let mut groups: Groups = BTreeMap::new();
    for run in runs {
        groups
            .entry((run.path, run.routes, run.variant.clone()))
            .or_default()
            .push(run);
    }
    let mut out = String::new();
    let first = runs[0];
    let _ = writeln!(
        out,
        "\nproxy: wrk -t{} -c{}, keep-alive; req/s and CPU are means over the runs, latencies medians",
        first.threads, first.connections
    );
    let _ = writeln!(
        out,
        "{:<12} {:>6} {:>4} {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "path",
        "routes",
        "runs",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "resp B",
        "proxy",
        "upstr",
        "wrk",
        "proxy",
        "other"
    );
    let _ = writeln!(
        out,
        "{:<12} {:>6} {:>4} {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "", "", "", "", "", "", "", "", "", "us/req", "us/req", "us/req", "RSS MiB", "cores"
    );
    for ((path, routes, variant), runs) in &groups {
        let opt = |v: Option<f64>, decimals: usize| {
            v.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
        };
        let _ = writeln!(
            out,
            "{:<12} {:>6} {:>4} {:>8.0} {:>7.2} {:>7.2} {:>7.1} {:>6} {:>6.0} {:>8} {:>8} {:>8} {:>8} {:>6}",
            variant.as_deref().unwrap_or(path.name()),
            routes.map_or("-".to_owned(), |r| r.to_string()),
            runs.len(),
            mean(runs.iter().map(|r| r.req_per_s)),
            median(runs.iter().map(|r| r.p50_ms)),
            median(runs.iter().map(|r| r.p99_ms)),
            runs.iter().map(|r| r.max_ms).fold(0.0, f64::max),
            runs.iter().map(|r| r.errors).sum::<u64>(),
            mean(runs.iter().map(|r| r.bytes_per_response)),
            opt(mean_some(runs.iter().map(|r| r.proxy_cpu_us_per_req)), 1),
            opt(mean_some(runs.iter().map(|r| r.upstream_cpu_us_per_req)), 1),
            opt(mean_some(runs.iter().map(|r| r.load_cpu_us_per_req)), 1),
            opt(max_rss_mib(runs), 1),
            opt(mean_some(runs.iter().map(|r| r.other_cpu_cores)), 2),
        );
    }

    let route_counts: Vec<usize> = groups
        .keys()
        .filter(|(path, _, variant)| *path == ProxyPath::Raftgate && variant.is_none())
        .filter_map(|(_, routes, _)| *routes)
        .collect();
    let nginx = groups.get(&(ProxyPath::Nginx, None, None));
    let raftgate = |routes: usize| groups.get(&(ProxyPath::Raftgate, Some(routes), None));
    if let Some(nginx) = nginx {
        for (i, &routes) in route_counts.iter().enumerate() {
            let Some(raftgate) = raftgate(routes) else {
                continue;
            };
            // The targets apply to the smallest table; the others are shown for reference.
            let judged = i == 0;
            let ratio_line = |out: &mut String, what: &str, figure: Figure, better: Better| {
                let _ = writeln!(
                    out,
                    "raftgate ({routes} routes)/nginx {what}: {}",
                    ratio(raftgate, nginx, figure, judged.then_some(better))
                );
            };
            ratio_line(
                &mut out,
                "req/s",
                Figure::Rate(|r| Some(r.req_per_s)),
                Better::AtLeast(1.0),
            );
            ratio_line(
                &mut out,
                "p99",
                Figure::Latency(|r| Some(r.p99_ms)),
                Better::AtMost(1.0),
            );
            if judged {
                ratio_line(
                    &mut out,
                    "p50",
                    Figure::Latency(|r| Some(r.p50_ms)),
                    Better::None,
                );
                ratio_line(
                    &mut out,
                    "proxy CPU/req",
                    Figure::Rate(|r| r.proxy_cpu_us_per_req),
                    Better::None,
                );
            }
        }
    }
    if let (Some(&fewest), Some(&most)) = (route_counts.first(), route_counts.last())
        && fewest != most
        && let (Some(small), Some(large)) = (raftgate(fewest), raftgate(most))
    {
        let _ = writeln!(
            out,
            "raftgate {most}/{fewest} routes req/s: {}",
            ratio(
                large,
                small,
                Figure::Rate(|r| Some(r.req_per_s)),
                Some(Better::AtLeast(1.0 - MAX_ROUTE_LOSS))
            )
        );
    }
    if let Some(&most) = route_counts.last()
        && let Some(rss) = raftgate(most).and_then(|runs| max_rss_mib(runs))
    {
        let mut line = format!(
            "raftgate RSS with {most} routes: {rss:.1} MiB{}",
            verdict(
                rss < RSS_TARGET_MIB,
                &format!("target < {RSS_TARGET_MIB:.0} MiB")
            )
        );
        for &routes in route_counts.iter().filter(|&&r| r != most) {
            if let Some(rss) = raftgate(routes).and_then(|runs| max_rss_mib(runs)) {
                let _ = write!(line, "; with {routes} routes {rss:.1} MiB");
            }
        }
        if let Some(rss) = nginx.and_then(|runs| max_rss_mib(runs)) {
            let _ = write!(line, "; nginx {rss:.1} MiB (master + worker)");
        }
        let _ = writeln!(out, "{line}");
    }
    for (name, what, numerator, least) in VARIANTS {
        let Some((routes, variant)) = groups
            .iter()
            .find(|((path, _, v), _)| *path == ProxyPath::Raftgate && v.as_deref() == Some(name))
            .map(|((_, routes, _), runs)| (*routes, runs))
        else {
            continue;
        };
        let Some(shipped) = routes.and_then(raftgate) else {
            continue;
        };
        let (a, b) = if numerator {
            (variant, shipped)
        } else {
            (shipped, variant)
        };
        let _ = writeln!(
            out,
            "raftgate {what} req/s: {}",
            ratio(
                a,
                b,
                Figure::Rate(|r| Some(r.req_per_s)),
                Some(least.map_or(Better::None, Better::AtLeast))
            )
        );
        let _ = writeln!(
            out,
            "raftgate {what} p99: {}",
            ratio(a, b, Figure::Latency(|r| Some(r.p99_ms)), None)
        );
    }
    let disturbed = runs
        .iter()
        .filter(|r| r.other_cpu_cores.is_some_and(|c| c > DISTURBED_CORES))
        .count();
    if disturbed > 0 {
        let _ = writeln!(
            out,
            "note: {disturbed} of {} runs had other processes using more than {DISTURBED_CORES} \
             cores (column \"other\"): compare per-round ratios, or repeat on a quieter machine",
            runs.len()
        );
    }
    if ["* ", "*)", "*;"].iter().any(|mark| out.contains(mark)) {
        let _ = writeln!(
            out,
            "*: a round whose two runs saw the upstream's CPU per request differ by more than \
             {:.0}%: the machine's speed changed between them; verdicts use every round",
            SAME_SPEED * 100.0
        );
    }
    let errors: u64 = runs.iter().map(|r| r.errors).sum();
    if errors > 0 {
        let _ = writeln!(
            out,
            "WARNING: {errors} failed requests or non-2xx answers: the figures above are not valid"
        );
    }
    out
}

/// A figure of a run (when it was measured), and how runs of it are aggregated.
#[derive(Clone, Copy)]
enum Figure {
    /// Averaged over the runs: throughput, CPU.
    Rate(fn(&LoadReport) -> Option<f64>),
    /// The median of the runs: latency percentiles.
    Latency(fn(&LoadReport) -> Option<f64>),
}

impl Figure {
    fn value(self, run: &LoadReport) -> Option<f64> {
        match self {
            Figure::Rate(f) | Figure::Latency(f) => f(run),
        }
    }
}

/// Which way a ratio meets its target.
#[derive(Clone, Copy)]
enum Better {
    /// Target: ratio ≥ the value.
    AtLeast(f64),
    /// Target: ratio ≤ the value.
    AtMost(f64),
    /// No target.
    None,
}

/// `a/b` of `figure`, each side aggregated over its runs as the table does, then the ratio of
/// each round, then the verdict.
fn ratio(a: &[&LoadReport], b: &[&LoadReport], figure: Figure, target: Option<Better>) -> String {
    let side = |runs: &[&LoadReport]| {
        let values = runs.iter().filter_map(|r| figure.value(r));
        match figure {
            Figure::Latency(_) => median(values),
            Figure::Rate(_) => mean(values),
        }
    };
    if !a.iter().chain(b).all(|r| figure.value(r).is_some()) {
        return "-".to_owned();
    }
    let overall = side(a) / side(b);
    let pairs: Vec<(&LoadReport, &LoadReport)> = a
        .iter()
        .filter_map(|ra| Some((*ra, *b.iter().find(|rb| rb.round == ra.round)?)))
        .collect();
    let per_round: Vec<String> = pairs
        .iter()
        .filter_map(|(ra, rb)| {
            let mark = if same_speed(ra, rb) { "" } else { "*" };
            Some(format!(
                "{:.2}{mark}",
                figure.value(ra)? / figure.value(rb)?
            ))
        })
        .collect();
    let verdict = match target {
        Some(Better::AtLeast(t)) => verdict(overall >= t, &format!("target >= {t:.2}")),
        Some(Better::AtMost(t)) => verdict(overall <= t, &format!("target <= {t:.2}")),
        Some(Better::None) | None => String::new(),
    };
    // The same ratio over the rounds run at one machine speed, shown (not judged) when some
    // were not.
    let (steady_a, steady_b): (Vec<&LoadReport>, Vec<&LoadReport>) = pairs
        .iter()
        .filter(|(ra, rb)| same_speed(ra, rb))
        .copied()
        .unzip();
    let steady = if steady_a.len() < pairs.len() && !steady_a.is_empty() {
        format!(
            "; same-speed rounds: {:.2}",
            side(&steady_a) / side(&steady_b)
        )
    } else {
        String::new()
    };
    format!(
        "{overall:.2} (rounds: {}{steady}){verdict}",
        per_round.join(" ")
    )
}

/// Whether two runs of one round saw the machine at the same speed (see [`SAME_SPEED`]).
fn same_speed(a: &LoadReport, b: &LoadReport) -> bool {
    match (a.upstream_cpu_us_per_req, b.upstream_cpu_us_per_req) {
        (Some(x), Some(y)) if x > 0.0 && y > 0.0 => (x / y - 1.0).abs() <= SAME_SPEED,
        _ => true,
    }
}

fn mean_some(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let values: Vec<f64> = values.flatten().collect();
    (!values.is_empty()).then(|| mean(values.into_iter()))
}

fn max_rss_mib(runs: &[&LoadReport]) -> Option<f64> {
    runs.iter()
        .filter_map(|r| r.proxy_rss_kib)
        .max()
        .map(|kib| kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use crate::report::{Record, table as report_table};

    fn line(
        path: &str,
        routes: Option<usize>,
        round: usize,
        rps: f64,
        p99: f64,
        rss: u64,
    ) -> String {
        let routes = routes.map_or("null".to_owned(), |r| r.to_string());
        let (cpu, rss) = if path == "direct" {
            ("null".to_owned(), "null".to_owned())
        } else {
            ((1e6 / rps).to_string(), rss.to_string())
        };
        format!(
            r#"{{"mode":"load","path":"{path}","routes":{routes},"round":{round},"threads":1,
            "connections":64,"duration_s":10.0,"requests":{req},"req_per_s":{rps},"p50_ms":0.5,
            "p90_ms":0.8,"p99_ms":{p99},"max_ms":9.0,"errors":0,"bytes_per_response":1200.0,
            "proxy_cpu_us_per_req":{cpu},"upstream_cpu_us_per_req":5.0,"load_cpu_us_per_req":4.0,
            "proxy_rss_kib":{rss},"other_cpu_cores":0.05}}"#,
            req = (rps * 10.0) as u64
        )
        .replace('\n', "")
    }

    /// The report of the runs given as JSON lines.
    fn table_of(lines: &[String]) -> String {
        let records: Vec<Record> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        report_table(&records)
    }

    #[test]
    fn ratios_and_targets_are_printed() {
        let lines = [
            line("direct", None, 1, 150_000.0, 1.0, 0),
            line("nginx", None, 1, 60_000.0, 2.0, 5 * 1024),
            line("raftgate", Some(10), 1, 66_000.0, 1.8, 30 * 1024),
            line("raftgate", Some(10_000), 1, 57_000.0, 1.9, 70 * 1024),
            line("nginx", None, 2, 60_000.0, 2.0, 5 * 1024),
            line("raftgate", Some(10), 2, 54_000.0, 2.2, 30 * 1024),
            line("raftgate", Some(10_000), 2, 53_000.0, 2.0, 60 * 1024),
        ];
        let table = table_of(&lines);
        assert!(
            table.contains(
                "raftgate (10 routes)/nginx req/s: 1.00 (rounds: 1.10 0.90) (target >= 1.00: met)"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "raftgate (10 routes)/nginx p99: 1.00 (rounds: 0.90 1.10) (target <= 1.00: met)"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "raftgate 10000/10 routes req/s: 0.92 (rounds: 0.86 0.98) (target >= 0.90: met)"
            ),
            "{table}"
        );
        assert!(
            table.contains("raftgate RSS with 10000 routes: 70.0 MiB (target < 64 MiB: NOT met); with 10 routes 30.0 MiB; nginx 5.0 MiB"),
            "{table}"
        );
        assert!(!table.contains("WARNING"), "{table}");
        assert!(!table.contains("writes/s"), "{table}");
        assert!(!table.contains("same-speed"), "{table}");
    }

    #[test]
    fn rounds_run_at_another_machine_speed_are_marked() {
        // In round 2 the upstream's cost per request rose by half behind raftgate: the machine
        // slowed down between the two runs.
        let slowed = line("raftgate", Some(10), 2, 45_000.0, 2.2, 30 * 1024).replace(
            r#""upstream_cpu_us_per_req":5.0"#,
            r#""upstream_cpu_us_per_req":7.5"#,
        );
        let lines = [
            line("nginx", None, 1, 60_000.0, 2.0, 5 * 1024),
            line("raftgate", Some(10), 1, 62_000.0, 1.8, 30 * 1024),
            line("nginx", None, 2, 60_000.0, 2.0, 5 * 1024),
            slowed,
        ];
        let table = table_of(&lines);
        assert!(
            table.contains(
                "raftgate (10 routes)/nginx req/s: 0.89 (rounds: 1.03 0.75*; same-speed rounds: 1.03) (target >= 1.00: NOT met)"
            ),
            "{table}"
        );
        assert!(table.contains("*: a round whose two runs"), "{table}");
    }

    #[test]
    fn variants_are_compared_with_raftgate_as_it_ships() {
        let variant = |name: &str, round: usize, rps: f64| {
            line("raftgate", Some(10), round, rps, 2.0, 30_000).replacen(
                "\"round\"",
                &format!("\"variant\":\"{name}\",\"round\""),
                1,
            )
        };
        let table = table_of(&[
            line("nginx", None, 1, 100.0, 2.0, 5_000),
            line("raftgate", Some(10), 1, 100.0, 2.0, 30_000),
            variant("no-analytics", 1, 102.0),
            variant("access-log", 1, 90.0),
            variant("tracing", 1, 80.0),
        ]);
        assert!(
            table.contains(
                "raftgate analytics on/off req/s: 0.98 (rounds: 0.98) (target >= 0.97: met)"
            ),
            "{table}"
        );
        assert!(
            table.contains("raftgate access log to a file/off req/s: 0.90 (rounds: 0.90) (target >= 0.95: NOT met)"),
            "{table}"
        );
        assert!(
            table.contains("raftgate tracing at 100% (OTLP)/off req/s: 0.80 (rounds: 0.80)\n"),
            "{table}"
        );
        assert!(table.contains("access-log"), "a row per variant: {table}");
    }
}
