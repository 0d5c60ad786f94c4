//! `netfig`: the paper's network figures from runs of `ping`.
//! - Fig 8: pings at 3 ms to one guest, SMP (the NIC's interrupt routed to CPU 0) beside VT (the interrupt
//!   broadcast to every sandbox sharing the NIC; the one that owns the address answers): interrupts per
//!   core/sandbox and round-trip times.
//! - Fig 11: a ping flood's round-trip times for the SMP build ("No VT"), VT with one guest, VT with two guests
//!   sharing the NIC by separate IPs, and (QEMU only) Linux 6.1 with the same e1000 and the same peer.
//!
//! CSV + PNG per figure under target/results/; ratios in the printed summary (emulator times are not absolute).
#![forbid(unsafe_code)]

use crate::peer::{self, GuestReport, PeerConfig};
use crate::experiments::ping::{free_port_pair, ping_run, PingOptions, PingRun};
use crate::{parse_result_line, plot, results_dir, workspace_root, BootOptions, Emulator};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetFigOptions {
    pub emulator: Emulator,
    pub cpus: u32,
    /// Fig 8 pings (at 3 ms) and Fig 11 flood pings (at `flood_interval_ms`).
    pub count: u32,
    pub flood_interval_ms: u64,
    pub linux: bool,
    /// VT boots: with VT-d (the default on QEMU) or without (`--iommu none`), to compare the packet path.
    pub iommu: Option<bool>,
}

impl Default for NetFigOptions {
    fn default() -> Self {
        NetFigOptions { emulator: Emulator::Qemu, cpus: 4, count: 500, flood_interval_ms: 2, linux: true, iommu: None }
    }
}

fn boot_opts(o: &NetFigOptions, vt: bool) -> BootOptions {
    // Both builds on one TCG thread (the VT build needs it: docs/vt.md), so their times compare.
    BootOptions { vt, emulator: o.emulator, cpus: o.cpus, echo: false, tcg_single: Some(true), iommu: o.iommu, ..BootOptions::default() }
}

fn must_answer(run: &PingRun, what: &str) -> Result<(), String> {
    if run.all_answered() {
        return Ok(());
    }
    Err(format!("{what}: not every ping was answered:\n{}", run.result_lines().join("\n")))
}

fn stats_row(name: &str, g: &GuestReport) -> String {
    let f = |v: Option<u64>| v.map_or(String::new(), |x| x.to_string());
    format!("{},{},{},{},{},{},{}\n", crate::csv_field(name), g.ip, g.sent, g.received, f(g.rtt_min_us()), f(g.rtt_median_us()), f(g.rtt_p99_us()))
}

/// Fig 8. Returns the summary text.
pub fn fig8(o: &NetFigOptions) -> Result<String, String> {
    let dir = results_dir()?;
    let mut runs = Vec::new();
    for vt in [false, true] {
        let p = PingOptions { boot: boot_opts(o, vt), guests: 1, sharers: if vt { o.cpus } else { 1 }, count: o.count, interval_ms: 3, ..PingOptions::default() };
        eprintln!("questv: netfig: fig 8, {} build, {} pings at 3 ms", p.boot.mode(), o.count);
        let run = ping_run(&p)?;
        must_answer(&run, "fig 8")?;
        runs.push(run);
    }
    let stem = format!("fig8-{}-{}cpus", o.emulator.name(), o.cpus);
    let mut csv = String::from("build,core,irqs\n");
    let mut bars = Vec::new();
    for (run, name) in runs.iter().zip(["SMP (interrupts to CPU 0)", "VT (broadcast to all sandboxes)"]) {
        let build = run.options.boot.mode();
        // SMP: one kernel, interrupts per CPU; VT: one count per sandbox (each has one CPU).
        let per_core: Vec<u64> = if run.options.boot.vt {
            (0..o.cpus).map(|s| run.guests.iter().find(|g| g.sandbox == i64::from(s)).map_or(0, |g| g.irqs)).collect()
        } else {
            (0..o.cpus as usize).map(|c| run.guests.first().and_then(|g| g.irqs_per_cpu.get(c).copied()).unwrap_or(0)).collect()
        };
        for (c, n) in per_core.iter().enumerate() {
            csv.push_str(&format!("{build},{c},{n}\n"));
        }
        bars.push(plot::Series { name: name.into(), points: per_core.iter().enumerate().map(|(c, &n)| (c as f64, n as f64)).collect() });
    }
    std::fs::write(dir.join(format!("{stem}-irqs.csv")), &csv).map_err(|e| e.to_string())?;
    let groups: Vec<String> = (0..o.cpus).map(|c| format!("core/sandbox {c}")).collect();
    plot::bar_chart(&dir.join(format!("{stem}-irqs.png")), &format!("Fig 8: NIC interrupts per core, {} pings at 3 ms ({})", o.count, o.emulator.name()), "interrupts", &groups, &bars)?;
    let mut rtt_csv = String::from("build,seq,rtt_us\n");
    let mut lines = Vec::new();
    for run in &runs {
        let g = &run.peer.guests[0];
        for s in &g.samples {
            rtt_csv.push_str(&format!("{},{},{}\n", run.options.boot.mode(), s.seq, s.rtt_us.map_or(String::new(), |r| r.to_string())));
        }
        lines.push(plot::Series {
            name: format!("{} (median {} us)", run.options.boot.mode(), g.rtt_median_us().unwrap_or(0)),
            points: g.samples.iter().filter_map(|s| s.rtt_us.map(|r| (f64::from(s.seq), r as f64 / 1000.0))).collect(),
        });
    }
    std::fs::write(dir.join(format!("{stem}-rtt.csv")), &rtt_csv).map_err(|e| e.to_string())?;
    plot::line_chart(&dir.join(format!("{stem}-rtt.png")), &format!("Fig 8: round-trip time per ping ({})", o.emulator.name()), "sequence number", "RTT (ms)", false, true, &lines)?;
    let med = |r: &PingRun| r.peer.guests[0].rtt_median_us().unwrap_or(0).max(1) as f64;
    let mut text = String::new();
    for run in &runs {
        for l in run.result_lines() {
            text.push_str(&l);
            text.push('\n');
        }
    }
    // What the VT run reported about VM exits: the sandboxes' own counts while serving (-1 where not counted)
    // and the monitor's APIC mode (a trapped xAPIC page makes every EOI an exit).
    let counted: Vec<i64> = runs[1].guests.iter().map(|g| g.vmexits).filter(|&e| e >= 0).collect();
    let vt_exits = if counted.is_empty() { "-".to_string() } else { counted.iter().sum::<i64>().to_string() };
    let vt_apic = runs[1].boot.lines.iter().filter_map(|l| parse_result_line(l)).find(|r| r.name == "monitor" && r.from_monitor()).and_then(|r| r.get("apic").map(str::to_string)).unwrap_or_else(|| "-".into());
    text.push_str(&format!("RESULT fig8 emulator={} cpus={} count={} rtt_median_vt_over_smp={:.3} vt_vmexits={vt_exits} vt_apic={vt_apic} csv={}\n", o.emulator.name(), o.cpus, o.count, med(&runs[1]) / med(&runs[0]), dir.join(format!("{stem}-irqs.csv")).display()));
    Ok(text)
}

/// Ping Linux 6.1 (Debian's kernel + busybox) in the same QEMU with the same e1000 and the same peer.
fn linux_flood(o: &NetFigOptions) -> Result<GuestReport, String> {
    let cache = workspace_root().join("target").join("linux-cache");
    let port = free_port_pair()?;
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    let net = crate::linux::LinuxNet { ip: Ipv4Addr::new(10, 0, 0, 2), prefix: 24, mac, udp_local_port: port, udp_remote_port: port + 1 };
    let guest = crate::linux::build_initrd(&cache, Some(&net), &[], "", true)?;
    let mut child = Command::new("qemu-system-x86_64")
        .args(crate::linux::qemu_args(&guest, o.cpus, 512, Some(&net)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
    let cfg = PeerConfig {
        count: o.count,
        interval: Duration::from_millis(o.flood_interval_ms),
        arp_timeout: Duration::from_secs(120),
        ..PeerConfig::new(port, vec![Ipv4Addr::new(10, 0, 0, 2)])
    };
    let r = peer::run_peer(&cfg, &AtomicBool::new(false));
    let _ = child.kill();
    let _ = child.wait();
    let r = r.map_err(|e| format!("host peer: {e}"))?;
    r.guests.into_iter().next().ok_or_else(|| "no Linux guest report".into())
}

/// Fig 11. Returns the summary text.
pub fn fig11(o: &NetFigOptions) -> Result<String, String> {
    let dir = results_dir()?;
    let mut series: Vec<(String, GuestReport)> = Vec::new();
    let setups: [(&str, bool, u32); 3] = [("No VT (SMP)", false, 1), ("VT, one guest", true, 1), ("VT, two guests sharing the NIC", true, 2)];
    for (name, vt, guests) in setups {
        let p = PingOptions { boot: boot_opts(o, vt), guests, sharers: guests, count: o.count, interval_ms: o.flood_interval_ms, ..PingOptions::default() };
        eprintln!("questv: netfig: fig 11, {name}, {} pings at {} ms", o.count, o.flood_interval_ms);
        let run = ping_run(&p)?;
        // A flood may lose requests (the emulated NIC drops what its ring cannot take): losses are data here.
        if run.peer.guests.iter().any(|g| g.received == 0) {
            must_answer(&run, name)?;
        }
        for (i, g) in run.peer.guests.into_iter().enumerate() {
            let label = if guests > 1 { format!("{name}: guest {}", i + 1) } else { name.to_string() };
            series.push((label, g));
        }
    }
    if o.linux && o.emulator == Emulator::Qemu {
        eprintln!("questv: netfig: fig 11, Linux 6.1, {} pings at {} ms", o.count, o.flood_interval_ms);
        match linux_flood(o) {
            Ok(g) => series.push(("Linux 6.1 (Debian + busybox)".into(), g)),
            Err(e) => eprintln!("questv: netfig: Linux baseline skipped: {e}"),
        }
    }
    let stem = format!("fig11-{}-{}cpus", o.emulator.name(), o.cpus);
    let mut csv = String::from("setup,guest,sent,received,rtt_us_min,rtt_us_median,rtt_us_p99\n");
    for (name, g) in &series {
        csv.push_str(&stats_row(name, g));
    }
    std::fs::write(dir.join(format!("{stem}.csv")), &csv).map_err(|e| e.to_string())?;
    // The RTT distribution per set-up: sorted samples against their percentile.
    let lines: Vec<plot::Series> = series
        .iter()
        .map(|(name, g)| {
            let mut rtts: Vec<u64> = g.samples.iter().filter_map(|s| s.rtt_us).collect();
            rtts.sort_unstable();
            let n = rtts.len().max(1) as f64;
            plot::Series { name: name.clone(), points: rtts.iter().enumerate().map(|(i, &r)| (100.0 * (i as f64 + 1.0) / n, r as f64 / 1000.0)).collect() }
        })
        .collect();
    plot::line_chart(&dir.join(format!("{stem}.png")), &format!("Fig 11: ping flood ({} ms interval) RTT distribution ({})", o.flood_interval_ms, o.emulator.name()), "percentile", "RTT (ms)", false, true, &lines)?;
    let base = series.first().and_then(|(_, g)| g.rtt_median_us()).unwrap_or(1).max(1) as f64;
    let mut text = String::new();
    for (name, g) in &series {
        text.push_str(&format!(
            "RESULT fig11 setup={} guest={} sent={} received={} lost={} rtt_us_median={} median_over_no_vt={:.3}\n",
            setup_id(name), g.ip, g.sent, g.received, g.lost, g.rtt_median_us().map_or("-".into(), |v| v.to_string()),
            g.rtt_median_us().map_or(0.0, |v| v as f64 / base)
        ));
    }
    text.push_str(&format!("csv: {}\n", dir.join(format!("{stem}.csv")).display()));
    Ok(text)
}

/// A set-up's label as one RESULT token: `VT, two guests sharing the NIC: guest 1` → `vt_two_guests_sharing_the_nic_guest_1`.
pub fn setup_id(label: &str) -> String {
    let mut id = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            id.push(c.to_ascii_lowercase());
        } else if !id.ends_with('_') {
            id.push('_');
        }
    }
    id.trim_matches('_').to_string()
}

pub fn netfig(o: &NetFigOptions) -> Result<(String, PathBuf), String> {
    let mut text = fig8(o)?;
    text.push_str(&fig11(o)?);
    Ok((text, results_dir()?))
}
