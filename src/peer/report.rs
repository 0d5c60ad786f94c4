//! What a peer run measured: per-guest samples and round-trip statistics, the run's report, outages and reply
//! gaps, and the `RESULT ping` lines and samples CSV made from them.
#![forbid(unsafe_code)]

use super::hostile::GarbageKind;
use super::wire::format_mac;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub seq: u16,
    /// Since the peer started pinging (the first round).
    pub sent_us: u64,
    /// `None` when no good reply came.
    pub rtt_us: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestReport {
    pub ip: Ipv4Addr,
    /// `None` when the guest never answered ARP within the timeout (then nothing was sent to it).
    pub mac: Option<[u8; 6]>,
    pub sent: u32,
    /// Requests with at least one good reply.
    pub received: u32,
    /// `sent - received`.
    pub lost: u32,
    /// Further good replies to an already answered request.
    pub dup: u32,
    /// Replies with a wrong payload, or to a sequence number never sent (they do not count as received).
    pub bad: u32,
    /// One per request sent, in sequence order.
    pub samples: Vec<Sample>,
}

impl GuestReport {
    fn sorted_rtts(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.samples.iter().filter_map(|s| s.rtt_us).collect();
        v.sort_unstable();
        v
    }

    pub fn rtt_min_us(&self) -> Option<u64> {
        self.samples.iter().filter_map(|s| s.rtt_us).min()
    }

    pub fn rtt_median_us(&self) -> Option<u64> {
        self.rtt_percentile_us(50)
    }

    pub fn rtt_p99_us(&self) -> Option<u64> {
        self.rtt_percentile_us(99)
    }

    /// Nearest-rank percentile: the smallest RTT with at least `pct`% of the samples at or below it.
    pub fn rtt_percentile_us(&self, pct: u32) -> Option<u64> {
        nearest_rank(&self.sorted_rtts(), pct)
    }
}

/// Nearest-rank percentile of sorted values (`pct` 0 gives the minimum, 100 or more the maximum).
pub fn nearest_rank(sorted: &[u64], pct: u32) -> Option<u64> {
    let pct = pct.min(100) as usize;
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    /// In the order of `PeerConfig::guests`.
    pub guests: Vec<GuestReport>,
    /// Every kind, in [`GarbageKind::ALL`] order, with how many were sent.
    pub garbage_sent: Vec<(GarbageKind, u32)>,
    pub arp_requests_answered: u32,
    pub frames_received: u64,
    /// Received frames the peer had no use for (not addressed to it, unknown ethertype, bad checksum, ...).
    pub frames_ignored: u64,
    /// Echo replies to hostile frames (identifier [`GARBAGE_IDENT`](super::wire::GARBAGE_IDENT)): a correct guest sends none.
    pub garbage_replies: u32,
    /// When pinging began (ARP resolved for every guest), in µs since the peer started — with the emulator,
    /// so `ping_start_us` + a sample's `sent_us` is since boot began.
    pub ping_start_us: u64,
}

impl PeerReport {
    pub fn garbage_total(&self) -> u32 {
        self.garbage_sent.iter().map(|(_, n)| n).sum()
    }
}

/// One `RESULT ping ...` line per guest, then `RESULT ping_garbage ...` if any garbage was sent.
pub fn result_lines(r: &PeerReport) -> Vec<String> {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut lines: Vec<String> = r
        .guests
        .iter()
        .map(|g| {
            format!(
                "RESULT ping guest={} sent={} received={} lost={} dup={} rtt_us_min={} rtt_us_median={} rtt_us_p99={} \
                 max_gap_us={} bad={} mac={}",
                g.ip,
                g.sent,
                g.received,
                g.lost,
                g.dup,
                opt(g.rtt_min_us()),
                opt(g.rtt_median_us()),
                opt(g.rtt_p99_us()),
                opt(max_reply_gap_us(&g.samples)),
                g.bad,
                g.mac.as_ref().map_or_else(|| "-".to_string(), format_mac),
            )
        })
        .collect();
    let total = r.garbage_total();
    if total > 0 {
        let mut line = format!("RESULT ping_garbage sent={total}");
        for (kind, n) in &r.garbage_sent {
            line.push_str(&format!(" {}={n}", kind.name()));
        }
        line.push_str(&format!(" replies={}", r.garbage_replies));
        lines.push(line);
    }
    lines
}

/// `guest,seq,sent_us,rtt_us`, one row per request (an empty `rtt_us` when it was lost).
/// The longest outage in a guest's reply timeline: the longest run of unanswered requests, and the time
/// from the last reply before it to the first reply after it (reply arrival times, `sent + rtt`). `None` when
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub first_lost_seq: u16,
    pub lost: u32,
    pub downtime_us: u64,
}

pub fn longest_outage(samples: &[Sample]) -> Option<Outage> {
    let mut best: Option<(usize, usize)> = None; // [start, end) of the lost run
    let mut i = 0;
    while i < samples.len() {
        if samples[i].rtt_us.is_none() {
            let start = i;
            while i < samples.len() && samples[i].rtt_us.is_none() {
                i += 1;
            }
            if best.is_none_or(|(a, b)| i - start > b - a) {
                best = Some((start, i));
            }
        } else {
            i += 1;
        }
    }
    let (start, end) = best?;
    let after = samples.get(end)?;
    let arrive = |s: &Sample| s.sent_us + s.rtt_us.unwrap_or(0);
    // With no reply before the run (it started with the first ping), the outage starts at the first request.
    let from = if start > 0 { arrive(&samples[start - 1]) } else { samples[start].sent_us };
    Some(Outage { first_lost_seq: samples[start].seq, lost: (end - start) as u32, downtime_us: arrive(after).saturating_sub(from) })
}

/// The longest silence between two consecutive replies, by arrival time (late replies count where they
/// arrived): what a client of the guest saw of an outage, lost or merely delayed requests alike. None with
/// fewer than two replies.
pub fn max_reply_gap_us(samples: &[Sample]) -> Option<u64> {
    let mut arrivals: Vec<u64> = samples.iter().filter_map(|s| Some(s.sent_us + s.rtt_us?)).collect();
    arrivals.sort_unstable();
    arrivals.windows(2).map(|w| w[1] - w[0]).max()
}

/// nothing was lost, or the run never ended (no reply came back after it).
pub fn samples_csv(r: &PeerReport) -> String {
    let mut csv = String::from("guest,seq,sent_us,rtt_us\n");
    for g in &r.guests {
        for s in &g.samples {
            let rtt = s.rtt_us.map(|v| v.to_string()).unwrap_or_default();
            csv.push_str(&format!("{},{},{},{}\n", g.ip, s.seq, s.sent_us, rtt));
        }
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn report_with(rtts: &[Option<u64>]) -> GuestReport {
        let samples: Vec<Sample> = rtts
            .iter()
            .enumerate()
            .map(|(i, &rtt_us)| Sample { seq: i as u16, sent_us: i as u64 * 1000, rtt_us })
            .collect();
        let received = rtts.iter().filter(|r| r.is_some()).count() as u32;
        GuestReport {
            ip: GUEST_A,
            mac: Some(MAC_A),
            sent: rtts.len() as u32,
            received,
            lost: rtts.len() as u32 - received,
            dup: 0,
            bad: 0,
            samples,
        }
    }

    #[test]
    fn peer_percentiles() {
        let g = report_with(&[Some(5), Some(1), Some(3), None, Some(2), Some(4)]);
        assert_eq!((g.rtt_min_us(), g.rtt_median_us(), g.rtt_p99_us()), (Some(1), Some(3), Some(5)));
        let hundred: Vec<Option<u64>> = (1..=100).rev().map(Some).collect();
        let g = report_with(&hundred);
        assert_eq!((g.rtt_min_us(), g.rtt_median_us(), g.rtt_p99_us()), (Some(1), Some(50), Some(99)));
        assert_eq!(g.rtt_percentile_us(100), Some(100));
        assert_eq!(g.rtt_percentile_us(0), Some(1));
        let one = report_with(&[Some(7)]);
        assert_eq!((one.rtt_min_us(), one.rtt_median_us(), one.rtt_p99_us()), (Some(7), Some(7), Some(7)));
        let none = report_with(&[None, None]);
        assert_eq!((none.rtt_min_us(), none.rtt_median_us(), none.rtt_p99_us()), (None, None, None));
        assert_eq!(nearest_rank(&[], 50), None);
    }

    fn sample_report() -> PeerReport {
        let mut unresolved = report_with(&[]);
        unresolved.ip = GUEST_B;
        unresolved.mac = None;
        PeerReport {
            guests: vec![report_with(&[Some(120), None, Some(80)]), unresolved],
            garbage_sent: GarbageKind::ALL
                .iter()
                .map(|&k| (k, if k == GarbageKind::ArpFlood { 2 } else { 1 }))
                .collect(),
            arp_requests_answered: 1,
            frames_received: 10,
            frames_ignored: 2,
            garbage_replies: 0,
            ping_start_us: 0,
        }
    }

    #[test]
    fn peer_result_line_format() {
        let r = sample_report();
        assert_eq!(
            result_lines(&r),
            vec![
                "RESULT ping guest=10.0.0.2 sent=3 received=2 lost=1 dup=0 rtt_us_min=80 rtt_us_median=80 \
                 rtt_us_p99=120 max_gap_us=1960 bad=0 mac=52:54:00:12:34:02",
                "RESULT ping guest=10.0.0.3 sent=0 received=0 lost=0 dup=0 rtt_us_min=- rtt_us_median=- rtt_us_p99=- \
                 max_gap_us=- bad=0 mac=-",
                "RESULT ping_garbage sent=9 runt=1 oversize=1 bad_ip_checksum=1 bad_icmp_checksum=1 \
                 unknown_ethertype=1 unknown_ip_protocol=1 arp_flood=2 truncated_ip=1 replies=0",
            ]
        );
        let mut quiet = r.clone();
        quiet.garbage_sent.iter_mut().for_each(|(_, n)| *n = 0);
        assert_eq!(result_lines(&quiet).len(), 2, "no garbage line without garbage");
    }

    #[test]
    fn peer_longest_outage_is_measured_between_replies() {
        let s = |seq: u16, sent_us: u64, rtt: Option<u64>| Sample { seq, sent_us, rtt_us: rtt };
        let timeline = [s(0, 0, Some(100)), s(1, 1000, None), s(2, 2000, Some(50)), s(3, 3000, None), s(4, 4000, None), s(5, 5000, Some(300)), s(6, 6000, Some(10))];
        // The two-request gap (3, 4): from the reply to 2 (2050) to the reply to 5 (5300).
        assert_eq!(longest_outage(&timeline), Some(Outage { first_lost_seq: 3, lost: 2, downtime_us: 3250 }));
        assert_eq!(longest_outage(&timeline[..1]), None, "nothing lost");
        assert_eq!(longest_outage(&timeline[..5]), None, "the outage never ended");
    }

    #[test]
    fn peer_reply_gap_counts_late_replies_where_they_arrived() {
        let s = |seq: u16, sent_us: u64, rtt: Option<u64>| Sample { seq, sent_us, rtt_us: rtt };
        // Replies at 100, 1100; then requests 2 and 3 answered late, both arriving at 5000; then 5100.
        let t = [s(0, 0, Some(100)), s(1, 1000, Some(100)), s(2, 2000, Some(3000)), s(3, 3000, Some(2000)), s(4, 5000, Some(100))];
        assert_eq!(max_reply_gap_us(&t), Some(3900));
        assert_eq!(max_reply_gap_us(&t[..1]), None);
    }

    #[test]
    fn peer_samples_csv_format() {
        assert_eq!(
            samples_csv(&sample_report()),
            "guest,seq,sent_us,rtt_us\n10.0.0.2,0,0,120\n10.0.0.2,1,1000,\n10.0.0.2,2,2000,80\n"
        );
    }
}
