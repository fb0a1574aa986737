//! Results of a run for people and machines: the Markdown report (every scenario side by side,
//! ratios to the baselines and to the peers of the same run, and the targets of issue 6 beside
//! what was measured) and the JSON document. Also the smoke verdict: which scenario failed a
//! request. Not for running anything.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    BenchError,
    machine::Machine,
    scenario::{PhaseResult, Role, Scenario, ScenarioResult, Settings},
};

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The command line of the run.
    pub command: String,
    pub machine: Machine,
    /// 1-, 5- and 15-minute load averages when the run ended.
    pub load_average_end: String,
    pub settings: Settings,
    pub scenarios: Vec<ScenarioResult>,
    /// The targets of issue 6 against this run.
    pub targets: Vec<TargetCheck>,
}

/// One target of issue 6, checked.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub target: &'static str,
    pub scenario: &'static str,
    /// The measured value, in `unit`; `None` when this run cannot tell (a scenario or phase
    /// missing).
    pub measured: Option<f64>,
    /// The limit, in `unit`.
    pub limit: f64,
    pub unit: &'static str,
    /// Whether the target is met; `None` when it cannot be told.
    pub met: Option<bool>,
    /// What the value was computed from.
    pub basis: String,
}

/// The open-loop rate and closed-loop concurrency the targets are stated at.
const TARGET_LOW_RATE: u64 = 1_000;
const TARGET_HIGH_RATE: u64 = 10_000;
const TARGET_STREAMS: usize = 64;

/// Assembles the report and checks the targets.
pub(crate) fn build(
    machine: Machine,
    command: String,
    settings: &Settings,
    scenarios: Vec<ScenarioResult>,
) -> Report {
    let targets = evaluate(&scenarios, settings);
    Report {
        command,
        load_average_end: Machine::describe().load_average,
        machine,
        settings: settings.clone(),
        scenarios,
        targets,
    }
}

/// A scenario that ran.
fn ran(scs: &[ScenarioResult], sc: Scenario) -> Option<&ScenarioResult> {
    scs.iter()
        .find(|r| r.scenario == sc && r.skipped.is_none() && !r.phases.is_empty())
}

fn open(r: &ScenarioResult, rate: u64) -> Option<&PhaseResult> {
    r.phase(&format!("open-{rate}")).filter(|p| p.load.ok > 0)
}

fn proxy_cpu(r: &ScenarioResult, key: &str) -> Option<f64> {
    let p = r.phase(key)?;
    (p.load.ok > 0).then_some(())?;
    p.cost(Role::Proxy).map(|c| c.cpu_us_per_req)
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn evaluate(scs: &[ScenarioResult], settings: &Settings) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let check = |target,
                 scenario: Scenario,
                 measured: Option<f64>,
                 limit,
                 unit,
                 strict: bool,
                 basis: String| {
        TargetCheck {
            target,
            scenario: scenario.name(),
            measured,
            limit,
            unit,
            met: measured.map(|m| if strict { m < limit } else { m <= limit }),
            basis,
        }
    };
    let base = ran(scs, Scenario::DirectHttp);
    for sc in [Scenario::InvokeHttp, Scenario::ProxyHttp] {
        let r = ran(scs, sc);
        let added = |q: fn(&PhaseResult) -> f64| {
            let s = open(r?, TARGET_LOW_RATE)?;
            let b = open(base?, TARGET_LOW_RATE)?;
            Some(q(s) - q(b))
        };
        for (target, q, limit, label) in [
            (
                "added latency p50 at 1000 rps ≤ 50 µs",
                (|p| p.load.latency.p50_us) as Quantile,
                50.0,
                "p50",
            ),
            (
                "added latency p99 at 1000 rps ≤ 250 µs",
                |p| p.load.latency.p99_us,
                250.0,
                "p99",
            ),
        ] {
            let mut t = check(
                target,
                sc,
                added(q),
                limit,
                "µs",
                false,
                format!("{label} minus direct-http's {label}, open loop 1000 rps"),
            );
            let lag = |r: Option<&ScenarioResult>| {
                let l = open(r?, TARGET_LOW_RATE)?.load.pacer_lag?;
                Some(if label == "p50" { l.p50_us } else { l.p99_us })
            };
            let worst_lag = lag(r).into_iter().chain(lag(base)).fold(0.0, f64::max);
            let certain_miss = t.measured.is_some_and(|m| m - worst_lag > limit);
            if t.met.is_some() && worst_lag > limit && !certain_miss {
                // The generator itself missed the schedule by more than the limit.
                t.met = None;
                let _ = write!(
                    t.basis,
                    "; the pacer's own {label} lag reached {worst_lag:.0} µs (machine busy), so this cannot be judged: rerun on a quiet machine"
                );
            } else if t.measured.is_some_and(|m| m < 0.0) {
                // The baseline was slower than the scenario: noise, not a result.
                t.met = None;
                t.basis.push_str(
                    "; negative, so the baseline phase was noisier than this one: rerun on a quiet machine",
                );
            }
            out.push(t);
        }
    }
    let invoke = ran(scs, Scenario::InvokeHttp);
    for rate in [TARGET_LOW_RATE, TARGET_HIGH_RATE] {
        out.push(check(
            "sidecar CPU ≤ 20 µs per request (InvokeService → HTTP)",
            Scenario::InvokeHttp,
            invoke.and_then(|r| proxy_cpu(r, &format!("open-{rate}"))),
            20.0,
            "µs",
            false,
            format!("sidecar utime+stime / requests, open loop {rate} rps"),
        ));
    }
    for sc in [Scenario::InvokeHttp, Scenario::ProxyHttp] {
        let r = ran(scs, sc);
        out.push(check(
            "idle RSS ≤ 15 MB",
            sc,
            r.and_then(|r| r.idle_rss_kib).map(mb),
            15.0,
            "MB",
            false,
            "VmRSS after start, before load".to_owned(),
        ));
        let streams = settings.open_loop_connections;
        out.push(check(
            "peak RSS ≤ 30 MB under 10k rps with 64 streams",
            sc,
            r.and_then(|r| open(r, TARGET_HIGH_RATE))
                .filter(|_| streams == TARGET_STREAMS)
                .and_then(|p| p.cost(Role::Proxy))
                .map(|c| mb(c.hwm_kib)),
            30.0,
            "MB",
            false,
            format!("VmHWM at the end of open loop 10000 rps over {streams} connections/streams"),
        ));
    }
    let proxy = ran(scs, Scenario::ProxyHttp);
    for (peer, factor, strict, target) in [
        (
            Scenario::NginxHttp,
            0.8,
            false,
            "proxy core CPU per request ≤ 0.8 × nginx",
        ),
        (
            Scenario::HaproxyHttp,
            1.0,
            true,
            "proxy core CPU per request < HAProxy",
        ),
    ] {
        let key = format!("open-{TARGET_HIGH_RATE}");
        let ratio = proxy
            .and_then(|p| proxy_cpu(p, &key))
            .zip(ran(scs, peer).and_then(|r| proxy_cpu(r, &key)))
            .filter(|(_, b)| *b > 0.0)
            .map(|(a, b)| a / b);
        out.push(check(
            target,
            Scenario::ProxyHttp,
            ratio,
            factor,
            "×",
            strict,
            format!("proxy-http / {peer} CPU µs per request, open loop {TARGET_HIGH_RATE} rps"),
        ));
    }
    for sc in [Scenario::InvokeHttp, Scenario::ProxyHttp] {
        let best = ran(scs, sc).and_then(|r| {
            r.phases
                .iter()
                .filter(|p| p.load.mode == "closed")
                .max_by(|a, b| a.load.throughput_rps.total_cmp(&b.load.throughput_rps))
        });
        let basis = best.map_or_else(
            || "no closed-loop phase".to_owned(),
            |p| {
                let cores = |role| p.cost(role).map_or(0.0, |c| c.cores);
                format!(
                    "best closed loop ({}); cores busy there: sidecar {:.2}, upstream {:.2}, load generator {:.2}",
                    p.key,
                    cores(Role::Proxy),
                    cores(Role::Upstream),
                    cores(Role::LoadGenerator)
                )
            },
        );
        let measured = best.map(|p| p.load.throughput_rps);
        out.push(TargetCheck {
            target: "throughput not limited by the sidecar up to 50k rps",
            scenario: sc.name(),
            measured,
            limit: 50_000.0,
            unit: "rps",
            met: measured.map(|m| m >= 50_000.0),
            basis,
        });
    }
    out
}

impl Report {
    /// The JSON document.
    pub fn to_json(&self) -> Result<String, BenchError> {
        serde_json::to_string_pretty(self).map_err(BenchError::Json)
    }

    /// What makes a smoke run fail: a scenario that could not run, or any request that
    /// failed or was never sent, or a phase with no answer at all. Skipped scenarios (a peer not
    /// installed) are not failures.
    pub fn smoke_failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.scenarios {
            if r.skipped.is_some() {
                continue;
            }
            if let Some(f) = &r.failure {
                out.push(format!("{}: {f}", r.name));
            }
            if r.phases.is_empty() && r.failure.is_none() {
                out.push(format!("{}: no phase ran", r.name));
            }
            for p in &r.phases {
                let l = &p.load;
                if l.errors > 0 || l.dropped > 0 || l.ok == 0 {
                    out.push(format!(
                        "{} {}: {} ok, {} errors, {} dropped{}",
                        r.name,
                        p.key,
                        l.ok,
                        l.errors,
                        l.dropped,
                        l.first_error
                            .as_ref()
                            .map(|e| format!(" (first error: {e})"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        out
    }

    /// The Markdown report.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let s = &self.settings;
        let m = &self.machine;
        let _ = writeln!(md, "### Run\n");
        let _ = writeln!(md, "- command: `{}`", self.command);
        let _ = writeln!(
            md,
            "- machine: nproc {}, {}, Linux {}, {} MiB RAM; load average {} at start, {} at end",
            m.nproc, m.cpu_model, m.kernel, m.memory_mib, m.load_average, self.load_average_end
        );
        let _ = writeln!(
            md,
            "- phases: open loop at {} rps over {} connections/streams, closed loop at concurrency {}; {:.2} s each (at most {} requests), {} warm-up requests per connection first{}",
            join(&s.rates),
            s.open_loop_connections,
            join(&s.concurrency),
            s.phase.as_secs_f64(),
            s.max_requests,
            s.warmup_requests,
            if s.smoke {
                "; SMOKE mode: numbers mean nothing"
            } else {
                ""
            }
        );
        for r in &self.scenarios {
            let what = match (&r.skipped, &r.failure, &r.proxy) {
                (Some(skip), _, _) => format!("skipped: {skip}"),
                (_, Some(f), _) => format!("FAILED: {f}"),
                (_, _, Some(p)) => format!("{} — {p}", r.description),
                _ => r.description.to_owned(),
            };
            let _ = writeln!(md, "- `{}`: {what}", r.name);
        }
        let cols: Vec<&ScenarioResult> = self
            .scenarios
            .iter()
            .filter(|r| r.skipped.is_none() && !r.phases.is_empty())
            .collect();
        if cols.is_empty() {
            return md;
        }
        let header: Vec<String> = cols.iter().map(|r| format!("`{}`", r.name)).collect();
        let direct_http = ran(&self.scenarios, Scenario::DirectHttp);
        let direct_grpc = ran(&self.scenarios, Scenario::DirectGrpc);

        let _ = writeln!(
            md,
            "\n### Latency, open loop (µs from each request's scheduled send time)\n"
        );
        let mut rows = Vec::new();
        for &rate in &s.rates {
            let key = format!("open-{rate}");
            for (label, q) in QUANTILES {
                rows.push(row(format!("{rate} rps {label}"), &cols, |r| {
                    r.phase(&key).map(|p| us(q(p)))
                }));
            }
            for (label, q) in [QUANTILES[0], QUANTILES[2]] {
                rows.push(row(
                    format!("{rate} rps {label} added vs `direct-http`"),
                    &cols,
                    |r| {
                        let b = direct_http?.phase(&key)?;
                        (r.scenario != Scenario::DirectHttp)
                            .then(|| r.phase(&key).map(|p| signed(q(p) - q(b))))?
                    },
                ));
            }
            for (label, q) in [QUANTILES[0], QUANTILES[2]] {
                rows.push(row(
                    format!("{rate} rps {label} added vs `direct-grpc`"),
                    &cols,
                    |r| {
                        let b = direct_grpc?.phase(&key)?;
                        r.scenario
                            .is_invoke()
                            .then(|| r.phase(&key).map(|p| signed(q(p) - q(b))))?
                    },
                ));
            }
            rows.push(row(format!("{rate} rps achieved rps"), &cols, |r| {
                r.phase(&key)
                    .map(|p| format!("{:.0}", p.load.throughput_rps))
            }));
            rows.push(row(
                format!("{rate} rps service p50 / p99 (from actual send)"),
                &cols,
                |r| {
                    r.phase(&key).map(|p| {
                        format!(
                            "{} / {}",
                            us(p.load.service.p50_us),
                            us(p.load.service.p99_us)
                        )
                    })
                },
            ));
            rows.push(row(format!("{rate} rps pacer lag p50 / p99"), &cols, |r| {
                let p = r.phase(&key)?;
                let l = p.load.pacer_lag?;
                let rt = if p.load.pacer_realtime == Some(true) {
                    ""
                } else {
                    " (not SCHED_FIFO)"
                };
                Some(format!("{} / {}{rt}", us(l.p50_us), us(l.p99_us)))
            }));
        }
        md.push_str(&table(&header, &rows));

        let _ = writeln!(md, "\n### Throughput, closed loop (requests/s)\n");
        let mut rows = Vec::new();
        for &c in &s.concurrency {
            let key = format!("closed-{c}");
            rows.push(row(format!("concurrency {c}"), &cols, |r| {
                r.phase(&key)
                    .map(|p| format!("{:.0}", p.load.throughput_rps))
            }));
            rows.push(row(format!("concurrency {c} × baseline"), &cols, |r| {
                let base = if r.scenario.is_invoke() {
                    direct_grpc
                } else {
                    direct_http
                }?;
                if base.scenario == r.scenario {
                    return None;
                }
                let b = base.phase(&key)?.load.throughput_rps;
                let v = r.phase(&key)?.load.throughput_rps;
                (b > 0.0).then(|| format!("{:.2}", v / b))
            }));
            rows.push(row(format!("concurrency {c} p50 / p99 µs"), &cols, |r| {
                r.phase(&key).map(|p| {
                    format!(
                        "{} / {}",
                        us(p.load.latency.p50_us),
                        us(p.load.latency.p99_us)
                    )
                })
            }));
        }
        md.push_str(&table(&header, &rows));
        let _ = writeln!(
            md,
            "\nBaseline: `direct-grpc` for the sidecar's InvokeService (`invoke-http`, `invoke-bolt`), `direct-http` for HTTP clients."
        );

        let _ = writeln!(
            md,
            "\n### CPU per request (µs of user+system time; proxy = sidecar or peer, whole process tree)\n"
        );
        let keys: Vec<String> = s
            .rates
            .iter()
            .map(|r| format!("open-{r}"))
            .chain(s.concurrency.iter().map(|c| format!("closed-{c}")))
            .collect();
        let mut rows = Vec::new();
        for (role, label) in [
            (Role::Proxy, "proxy"),
            (Role::Upstream, "upstream"),
            (Role::LoadGenerator, "load generator"),
        ] {
            for key in &keys {
                rows.push(row(format!("{label} @ {key}"), &cols, |r| {
                    r.phase(key)?
                        .cost(role)
                        .map(|c| format!("{:.1}", c.cpu_us_per_req))
                }));
            }
        }
        for key in &keys {
            rows.push(row(format!("proxy cores busy @ {key}"), &cols, |r| {
                r.phase(key)?
                    .cost(Role::Proxy)
                    .map(|c| format!("{:.2}", c.cores))
            }));
        }
        for peer in [Scenario::NginxHttp, Scenario::HaproxyHttp] {
            let Some(p) = ran(&self.scenarios, peer) else {
                continue;
            };
            for key in &keys {
                rows.push(row(format!("proxy CPU × `{peer}` @ {key}"), &cols, |r| {
                    if r.scenario == peer {
                        return None;
                    }
                    let a = proxy_cpu(r, key)?;
                    let b = proxy_cpu(p, key)?;
                    (b > 0.0).then(|| format!("{:.2}", a / b))
                }));
            }
        }
        md.push_str(&table(&header, &rows));

        let _ = writeln!(
            md,
            "\n### Proxy memory (MB = 10⁶ bytes, whole process tree)\n"
        );
        let mut rows = vec![row("idle RSS".to_owned(), &cols, |r| {
            r.idle_rss_kib.map(|k| format!("{:.1}", mb(k)))
        })];
        for key in &keys {
            rows.push(row(format!("peak RSS (VmHWM) after {key}"), &cols, |r| {
                r.phase(key)?
                    .cost(Role::Proxy)
                    .map(|c| format!("{:.1}", mb(c.hwm_kib)))
            }));
        }
        for key in &keys {
            rows.push(row(format!("RSS at end of {key}"), &cols, |r| {
                r.phase(key)?
                    .cost(Role::Proxy)
                    .map(|c| format!("{:.1}", mb(c.rss_end_kib)))
            }));
        }
        md.push_str(&table(&header, &rows));

        let _ = writeln!(md, "\n### Issue 6 targets\n");
        let _ = writeln!(md, "| target | scenario | measured | limit | met | basis |");
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for t in &self.targets {
            let measured = t
                .measured
                .map_or_else(|| "n/a".to_owned(), |v| fmt_value(v, t.unit));
            let met = match t.met {
                Some(true) => "**met**",
                Some(false) => "not met",
                None => "n/a",
            };
            let _ = writeln!(
                md,
                "| {} | `{}` | {measured} | {} | {met} | {} |",
                t.target,
                t.scenario,
                fmt_value(t.limit, t.unit),
                t.basis
            );
        }

        let failures = self.smoke_failures();
        if !failures.is_empty() {
            let _ = writeln!(md, "\n### Errors\n");
            for f in failures {
                let _ = writeln!(md, "- {f}");
            }
        }
        md
    }
}

type Quantile = fn(&PhaseResult) -> f64;

const QUANTILES: [(&str, Quantile); 4] = [
    ("p50", |p| p.load.latency.p50_us),
    ("p90", |p| p.load.latency.p90_us),
    ("p99", |p| p.load.latency.p99_us),
    ("p99.9", |p| p.load.latency.p999_us),
];

fn row<'a>(
    label: String,
    cols: &[&'a ScenarioResult],
    cell: impl Fn(&'a ScenarioResult) -> Option<String>,
) -> Vec<String> {
    std::iter::once(label)
        .chain(
            cols.iter()
                .map(|r| cell(r).unwrap_or_else(|| "–".to_owned())),
        )
        .collect()
}

fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| | {} |", header.join(" | "));
    let _ = writeln!(t, "|---|{}", "---:|".repeat(header.len()));
    for r in rows {
        let _ = writeln!(t, "| {} |", r.join(" | "));
    }
    t
}

fn us(v: f64) -> String {
    format!("{v:.1}")
}

fn signed(v: f64) -> String {
    format!("{v:+.1}")
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "rps" => format!("{v:.0} rps"),
        "×" => format!("{v:.2}×"),
        _ => format!("{v:.1} {unit}"),
    }
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{
        load::{Latency, LoadResult},
        scenario::ProcCost,
    };

    fn phase(key: &str, p50: f64, p99: f64, proxy_cpu: Option<f64>) -> PhaseResult {
        let mut load = LoadResult::failed(key.strip_prefix("open-").map(|_| 1), 64, String::new());
        load.errors = 0;
        load.first_error = None;
        load.ok = 1000;
        load.throughput_rps = 1000.0;
        load.latency = Latency {
            p50_us: p50,
            p99_us: p99,
            ..Latency::default()
        };
        let procs = proxy_cpu
            .map(|cpu| ProcCost {
                role: Role::Proxy,
                name: "proxy".to_owned(),
                cpu_s: 0.0,
                cpu_us_per_req: cpu,
                cores: 0.5,
                rss_max_kib: 10_000,
                rss_end_kib: 10_000,
                hwm_kib: 20_000,
            })
            .into_iter()
            .collect();
        PhaseResult {
            key: key.to_owned(),
            load,
            procs,
        }
    }

    fn scenario(sc: Scenario, p50: f64, p99: f64, cpu: Option<f64>) -> ScenarioResult {
        let mut r = ScenarioResult::new(sc);
        r.idle_rss_kib = cpu.map(|_| 9_000);
        r.phases = vec![
            phase("open-1000", p50, p99, cpu),
            phase("open-10000", p50, p99, cpu),
        ];
        r
    }

    fn target<'a>(targets: &'a [TargetCheck], name: &str, sc: &str) -> &'a TargetCheck {
        targets
            .iter()
            .find(|t| t.target.starts_with(name) && t.scenario == sc)
            .unwrap()
    }

    #[test]
    fn targets_compare_against_the_baseline_and_the_peers() {
        let settings = Settings::full(PathBuf::new(), PathBuf::new());
        let scs = vec![
            scenario(Scenario::DirectHttp, 100.0, 300.0, None),
            scenario(Scenario::ProxyHttp, 140.0, 200.0, Some(30.0)),
            scenario(Scenario::NginxHttp, 150.0, 400.0, Some(40.0)),
        ];
        let t = evaluate(&scs, &settings);
        let p50 = target(&t, "added latency p50", "proxy-http");
        assert_eq!((p50.measured, p50.met), (Some(40.0), Some(true)));
        // Negative added latency is noise: not judged.
        let p99 = target(&t, "added latency p99", "proxy-http");
        assert_eq!((p99.measured, p99.met), (Some(-100.0), None));
        let nginx = target(&t, "proxy core CPU per request ≤ 0.8", "proxy-http");
        assert_eq!((nginx.measured, nginx.met), (Some(0.75), Some(true)));
        // HAProxy did not run; invoke-http did not run.
        assert_eq!(
            target(&t, "proxy core CPU per request <", "proxy-http").met,
            None
        );
        assert_eq!(target(&t, "sidecar CPU", "invoke-http").met, None);
        // A pacer that missed its schedule by more than the limit makes the check moot.
        let mut late = scs.clone();
        late[1].phases[0].load.pacer_lag = Some(Latency {
            p50_us: 60.0,
            ..Latency::default()
        });
        let t2 = evaluate(&late, &settings);
        assert_eq!(target(&t2, "added latency p50", "proxy-http").met, None);
        let idle = target(&t, "idle RSS", "proxy-http");
        assert_eq!(idle.met, Some(true));
        let peak = target(&t, "peak RSS", "proxy-http");
        assert_eq!(peak.met, Some(true));
    }

    #[test]
    fn markdown_puts_every_scenario_side_by_side_and_smoke_flags_errors() {
        let settings = Settings::full(PathBuf::new(), PathBuf::new());
        let mut bad = scenario(Scenario::ProxyHttp, 140.0, 200.0, Some(30.0));
        bad.phases[1].load.errors = 3;
        let mut skipped = ScenarioResult::new(Scenario::HaproxyHttp);
        skipped.skipped = Some("not installed".to_owned());
        let scs = vec![
            scenario(Scenario::DirectHttp, 100.0, 300.0, None),
            bad,
            skipped,
        ];
        let machine = crate::Machine::describe();
        let report = build(machine, "outrigger-bench".to_owned(), &settings, scs);
        let md = report.to_markdown();
        assert!(md.contains("| | `direct-http` | `proxy-http` |"), "{md}");
        assert!(
            md.contains("| 1000 rps p50 added vs `direct-http` | – | +40.0 |"),
            "{md}"
        );
        assert!(
            md.contains("`haproxy-http`: skipped: not installed"),
            "{md}"
        );
        assert_eq!(report.smoke_failures().len(), 1);
        assert!(report.to_json().unwrap().contains("\"targets\""));
    }

    #[test]
    fn both_invoke_scenarios_are_compared_with_the_grpc_floor() {
        let settings = Settings {
            concurrency: vec![1],
            ..Settings::full(PathBuf::new(), PathBuf::new())
        };
        let with_closed = |mut r: ScenarioResult, rps: f64| {
            let mut p = phase("closed-1", 100.0, 200.0, None);
            p.load.throughput_rps = rps;
            r.phases.push(p);
            r
        };
        let scs = vec![
            with_closed(scenario(Scenario::DirectHttp, 100.0, 300.0, None), 4000.0),
            with_closed(scenario(Scenario::DirectGrpc, 200.0, 400.0, None), 2000.0),
            with_closed(
                scenario(Scenario::InvokeHttp, 300.0, 500.0, Some(40.0)),
                1000.0,
            ),
            with_closed(
                scenario(Scenario::InvokeBolt, 350.0, 600.0, Some(45.0)),
                500.0,
            ),
        ];
        let report = build(crate::Machine::describe(), "b".to_owned(), &settings, scs);
        let md = report.to_markdown();
        assert!(
            md.contains("| 1000 rps p50 added vs `direct-grpc` | – | – | +100.0 | +150.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| 1000 rps p99 added vs `direct-http` | – | +100.0 | +200.0 | +300.0 |"),
            "{md}"
        );
        // direct-grpc against direct-http, the invoke scenarios against direct-grpc.
        assert!(
            md.contains("| concurrency 1 × baseline | – | 0.50 | 0.50 | 0.25 |"),
            "{md}"
        );
        assert!(
            md.contains("| proxy @ open-1000 | – | – | 40.0 | 45.0 |"),
            "{md}"
        );
    }
}
