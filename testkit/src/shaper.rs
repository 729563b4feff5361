//! [`Shaper`]: a TCP proxy that makes loopback behave like a network link, so a benchmark on
//! one machine can tell a design that needs concurrency from one that does not.
//!
//! # The model
//!
//! Every accepted connection gets its own link ([`LinkProfile`]), in each direction:
//! - **bandwidth**: a token bucket ([`Pacer`]) of `bytes_per_sec`, holding at most
//!   [`BURST`] bytes, paces what is read from the sender; the sender's socket fills and TCP
//!   holds it back, as a slow path does. Each direction has its own bucket (a full-duplex
//!   link), and every connection has its own: N connections get N times the rate, which is how
//!   a per-connection service limit behaves and why parallel ranges and parallel Put Blocks pay.
//! - **latency**: everything read is delivered `rtt / 2` later (a delay line): a request and
//!   its answer cost one round trip, while a long transfer is pipelined, never stop-and-wait.
//!   Bytes in flight are bounded by the bandwidth-delay product (plus two chunks), so the
//!   proxy holds little memory.
//! - **set-up**: a new connection costs one round trip before its first byte (the TCP
//!   handshake). TLS would add one or two more; they are not modelled.
//!
//! Not modelled: loss, congestion control, TCP window limits (the per-connection rate stands
//! for all of them).
//!
//! # Host
//!
//! Forwarding is byte for byte, except that a [`Shaper`] started with a `host` rewrites the
//! `Host` header of each request (HTTP/1.1, bodies by `Content-Length`, [`HostRewrite`]), as a
//! front door forwards to a backend: the ACS emulator checks `Host` against its own address,
//! while the client addressed the proxy. Signatures are unaffected: ACS signs `x-ms-host`, and
//! Storage's SharedKey does not sign the host at all.
//!
//! # Defaults
//!
//! [`AZURE_ACS`] and [`AZURE_BLOB`] model a function app in an Azure region reading from
//! ACS recording storage and writing to a Storage account in its own region; their docs say
//! which figures Microsoft publishes and which are assumptions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Bytes read from a sender at a time, and the unit of the delay line.
const CHUNK: usize = 64 * 1024;
/// The token bucket's depth: what a link sends at once after being idle. Two chunks, so a
/// timer that wakes a millisecond late does not cost throughput (at 100 MB/s a millisecond is
/// 100 KB, less than this).
pub const BURST: u64 = 2 * CHUNK as u64;
/// The largest request head [`HostRewrite`] accepts.
const MAX_HEAD: usize = 64 * 1024;

/// One direction of one connection: its bandwidth and its round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkProfile {
    /// Bytes per second, per connection, per direction.
    pub bytes_per_sec: u64,
    /// The round-trip time; each direction delays by half of it.
    pub rtt: Duration,
}

/// ACS recording storage as seen from a function app: **12.5 MB/s (100 Mbit/s) per
/// connection, 30 ms round trip**.
///
/// - The round trip is Microsoft's published figure for two regions of one geography
///   ("Azure network round-trip latency statistics": 5-72 ms between regions within North
///   America, 3-28 ms within Europe). Recordings are kept in the ACS resource's data location,
///   a geography rather than a region, so the recording store is usually in another region
///   than the app.
/// - The per-connection rate is an **assumption**: Microsoft publishes no throughput figure for
///   recording downloads. It is the reason Microsoft's .NET Call Automation SDK downloads in
///   parallel ranges; 100 Mbit/s moves a 1.5 GB chunk in two minutes on one stream.
pub const AZURE_ACS: LinkProfile = LinkProfile {
    bytes_per_sec: 12_500_000,
    rtt: Duration::from_millis(30),
};

/// A Storage account in the app's own region: **60 MiB/s per connection, 2 ms round trip**.
///
/// - The round trip is the bound Microsoft states between availability zones of one region
///   ("less than approximately 2 ms"): the app and the account may sit in different zones.
/// - The per-connection rate is an **assumption** built on a published figure: 60 MiB/s is
///   the Storage scalability target for a single blob from before high-throughput block blobs
///   (it still applies to page blobs); a block blob now scales to the account limits with
///   concurrency, so one connection is taken to carry what one blob used to.
pub const AZURE_BLOB: LinkProfile = LinkProfile {
    bytes_per_sec: 60 * 1024 * 1024,
    rtt: Duration::from_millis(2),
};

impl LinkProfile {
    /// What `connections` parallel connections can carry together, bytes per second.
    pub fn aggregate(&self, connections: usize) -> u64 {
        self.bytes_per_sec.saturating_mul(connections as u64)
    }

    /// Half the round trip: the delay of one direction.
    pub fn one_way(&self) -> Duration {
        self.rtt / 2
    }

    /// Chunks the delay line holds at full rate: the bandwidth-delay product, plus two so the
    /// line never starves the link.
    fn in_flight_chunks(&self) -> usize {
        let bdp = self.bytes_per_sec as f64 * self.one_way().as_secs_f64();
        (bdp / CHUNK as f64).ceil() as usize + 2
    }
}

/// The pure arithmetic of one direction: a token bucket for the rate, then the delay line.
/// Time comes from the caller, so it is tested without sleeping.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    one_way: Duration,
}

impl Pacer {
    /// A full bucket at `now`.
    pub fn new(profile: LinkProfile, now: Instant) -> Pacer {
        Pacer {
            rate: profile.bytes_per_sec.max(1) as f64,
            burst: BURST as f64,
            tokens: BURST as f64,
            last: now,
            one_way: profile.one_way(),
        }
    }

    /// `bytes` read at `now`: when they leave (the sender is not read again before then) and
    /// when they arrive at the other end. The bucket goes into debt rather than splitting a
    /// chunk, so the average rate is exact whatever the chunk sizes.
    pub fn schedule(&mut self, now: Instant, bytes: usize) -> (Instant, Instant) {
        let now = now.max(self.last);
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst) - bytes as f64;
        self.last = now;
        let depart = if self.tokens >= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(-self.tokens / self.rate)
        };
        (depart, depart + self.one_way)
    }
}

/// Rewrites the `Host` header of every request on an HTTP/1.1 connection, fed the
/// client-to-server byte stream in pieces of any size; bodies (by `Content-Length`) pass
/// untouched. A chunked request body is refused: nothing the benchmark sends uses one.
#[derive(Debug)]
pub struct HostRewrite {
    host: String,
    /// The start of a head not yet complete (empty inside a body).
    head: Vec<u8>,
    /// Body bytes still to pass through.
    body_left: u64,
}

impl HostRewrite {
    /// Sets every request's `Host` to `host`.
    pub fn new(host: &str) -> HostRewrite {
        HostRewrite {
            host: host.to_string(),
            head: Vec::new(),
            body_left: 0,
        }
    }

    /// The bytes to forward for `input` (a head is held back until it is complete).
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(input.len() + 64);
        let n = self.body_left.min(input.len() as u64) as usize;
        out.extend_from_slice(&input[..n]);
        self.body_left -= n as u64;
        self.head.extend_from_slice(&input[n..]);
        loop {
            let Some(end) = find(&self.head, b"\r\n\r\n").map(|i| i + 4) else {
                if self.head.len() > MAX_HEAD {
                    return Err(format!("request head over {MAX_HEAD} bytes"));
                }
                return Ok(out);
            };
            let rest = self.head.split_off(end);
            let (rewritten, body) = rewrite_head(&self.head, &self.host)?;
            out.extend_from_slice(&rewritten);
            // Inside a body `rest` is used up, so the head starts empty again.
            let n = body.min(rest.len() as u64) as usize;
            out.extend_from_slice(&rest[..n]);
            self.body_left = body - n as u64;
            self.head = rest[n..].to_vec();
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One complete head with its `Host` replaced, and its body length.
fn rewrite_head(head: &[u8], host: &str) -> Result<(Vec<u8>, u64), String> {
    let text = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8".to_string())?;
    let mut out = String::with_capacity(text.len() + host.len());
    let mut body = 0;
    for (i, line) in text.trim_end_matches("\r\n").split("\r\n").enumerate() {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let name = name.trim().to_ascii_lowercase();
        if i > 0 && name == "host" {
            out.push_str("Host: ");
            out.push_str(host);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
        if i > 0 && name == "content-length" {
            body = value
                .trim()
                .parse()
                .map_err(|_| format!("bad Content-Length `{}`", value.trim()))?;
        }
        if i > 0 && name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            return Err("chunked request bodies are not supported".into());
        }
    }
    out.push_str("\r\n");
    Ok((out.into_bytes(), body))
}

/// Connections open now and the most open at once since the last [`Shaper::take_peak`].
#[derive(Debug, Default)]
struct Gauge {
    open: AtomicUsize,
    peak: AtomicUsize,
    accepted: AtomicUsize,
}

impl Gauge {
    fn opened(&self) {
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.accepted.fetch_add(1, Ordering::SeqCst);
    }
    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running shaping proxy on a free loopback port; stops (with its connections) when
/// dropped.
#[derive(Debug)]
pub struct Shaper {
    addr: SocketAddr,
    profile: LinkProfile,
    gauge: Arc<Gauge>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Shaper {
    /// Listens on `127.0.0.1:0` and forwards every connection to `target` through its own
    /// `profile` link, rewriting `Host` to `host` when given. Must be called inside a Tokio
    /// runtime; the proxy lives on it.
    pub async fn start(
        target: SocketAddr,
        profile: LinkProfile,
        host: Option<String>,
    ) -> std::io::Result<Shaper> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let gauge = Arc::new(Gauge::default());
        let (stop, mut stopped) = watch::channel(false);
        let task = {
            let gauge = gauge.clone();
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = stopped.changed() => return,
                    };
                    let Ok((client, _)) = accepted else { continue };
                    let (gauge, host, mut stop) = (gauge.clone(), host.clone(), stopped.clone());
                    tokio::spawn(async move {
                        gauge.opened();
                        tokio::select! {
                            _ = relay(client, target, profile, host) => {}
                            _ = stop.changed() => {}
                        }
                        gauge.closed();
                    });
                }
            })
        };
        Ok(Shaper {
            addr,
            profile,
            gauge,
            stop,
            task,
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// The link every connection gets.
    pub fn profile(&self) -> LinkProfile {
        self.profile
    }

    /// The most connections open at once since the last call (or the start), and how many
    /// were accepted in that time; resets both.
    pub fn take_peak(&self) -> (usize, usize) {
        let open = self.gauge.open.load(Ordering::SeqCst);
        (
            self.gauge.peak.swap(open, Ordering::SeqCst),
            self.gauge.accepted.swap(0, Ordering::SeqCst),
        )
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// One connection: a round trip for the handshake, then each direction through its own pacer.
async fn relay(client: TcpStream, target: SocketAddr, profile: LinkProfile, host: Option<String>) {
    tokio::time::sleep(profile.rtt).await;
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pipe(
            client_read,
            server_write,
            profile,
            host.as_deref().map(HostRewrite::new)
        ),
        pipe(server_read, client_write, profile, None),
    );
}

/// Copies one direction: reads at the pacer's rate, delivers after the one-way delay, and
/// passes the end of the stream on.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    profile: LinkProfile,
    mut rewrite: Option<HostRewrite>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(profile.in_flight_chunks());
    let reader = async move {
        let mut pacer = Pacer::new(profile, Instant::now());
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let data = match rewrite.as_mut() {
                Some(r) => match r.feed(&buf[..n]) {
                    Ok(out) => Bytes::from(out),
                    Err(_) => break,
                },
                None => Bytes::copy_from_slice(&buf[..n]),
            };
            let (depart, arrive) = pacer.schedule(Instant::now(), data.len());
            tokio::time::sleep_until(depart.into()).await;
            if tx.send((arrive, data)).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((arrive, data)) = rx.recv().await {
            tokio::time::sleep_until(arrive.into()).await;
            if to.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    fn link(mbps: u64, rtt_ms: u64) -> LinkProfile {
        LinkProfile {
            bytes_per_sec: mbps * MB,
            rtt: Duration::from_millis(rtt_ms),
        }
    }

    /// Feeds `total` bytes in `chunk`-sized reads, each read as soon as the pacer allows, and
    /// returns when the last byte arrives, relative to `t0`.
    fn transfer(profile: LinkProfile, total: u64, chunk: usize) -> Duration {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(profile, t0);
        let (mut now, mut last) = (t0, t0);
        let mut sent = 0;
        while sent < total {
            let n = (total - sent).min(chunk as u64) as usize;
            let (depart, arrive) = pacer.schedule(now, n);
            now = depart;
            last = arrive;
            sent += n as u64;
        }
        last - t0
    }

    #[test]
    fn a_long_transfer_runs_at_the_rate_plus_one_way_delay() {
        // 100 MB at 10 MB/s with a 40 ms round trip: 10 s of pacing (less the initial burst),
        // then 20 ms of flight. Pipelined: not a round trip per chunk.
        let took = transfer(link(10, 40), 100 * MB, CHUNK);
        let expected = 10.0 - BURST as f64 / (10 * MB) as f64 + 0.020;
        assert!(
            (took.as_secs_f64() - expected).abs() < 1e-3,
            "{took:?} vs {expected}"
        );
    }

    #[test]
    fn the_rate_holds_whatever_the_read_sizes() {
        for chunk in [7, 1000, 4096, CHUNK, 3 * CHUNK] {
            let took = transfer(link(50, 0), 10 * MB, chunk).as_secs_f64();
            let rate = (10 * MB) as f64 / took;
            // The initial burst is the only excess over the rate.
            let excess = rate * took - (50 * MB) as f64 * took;
            assert!(
                excess >= 0.0 && excess <= BURST as f64 + chunk as f64,
                "chunk {chunk}: {rate} B/s over {took} s"
            );
        }
    }

    #[test]
    fn an_idle_link_sends_a_burst_at_once_then_paces() {
        let t0 = Instant::now();
        let profile = link(1, 10);
        let mut pacer = Pacer::new(profile, t0);
        let (depart, arrive) = pacer.schedule(t0, BURST as usize);
        assert_eq!(depart, t0, "a full bucket sends at once");
        assert_eq!(arrive, t0 + Duration::from_millis(5), "half the round trip");
        let (depart, _) = pacer.schedule(t0, 1000);
        assert_eq!(depart, t0 + Duration::from_millis(1), "1000 B at 1 MB/s");
        // Idle for an hour: the bucket holds no more than the burst.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(pacer.schedule(later, BURST as usize).0, later);
        assert!(pacer.schedule(later, 1).0 > later);
    }

    #[test]
    fn a_request_and_its_answer_cost_one_round_trip() {
        let profile = link(1000, 30);
        let t0 = Instant::now();
        let (mut up, mut down) = (Pacer::new(profile, t0), Pacer::new(profile, t0));
        let (_, request_arrives) = up.schedule(t0, 300);
        let (_, answer_arrives) = down.schedule(request_arrives, 300);
        assert_eq!(answer_arrives - t0, Duration::from_millis(30));
    }

    #[test]
    fn connections_add_up_and_the_delay_line_holds_the_bandwidth_delay_product() {
        assert_eq!(AZURE_ACS.aggregate(8), 100_000_000);
        assert_eq!(AZURE_BLOB.aggregate(4), 4 * 60 * 1024 * 1024);
        // 12.5 MB/s x 15 ms = 187.5 KB: three chunks, plus two.
        assert_eq!(AZURE_ACS.in_flight_chunks(), 5);
        assert_eq!(link(10, 0).in_flight_chunks(), 2);
    }

    fn feed_in_pieces(rewrite: &mut HostRewrite, input: &[u8], piece: usize) -> Vec<u8> {
        input
            .chunks(piece)
            .flat_map(|p| rewrite.feed(p).unwrap())
            .collect()
    }

    #[test]
    fn host_is_rewritten_in_every_request_and_bodies_pass_untouched() {
        let input = b"PUT /a?comp=block HTTP/1.1\r\nhost: 127.0.0.1:1\r\ncontent-length: 20\r\n\r\nHost: in the body!!\
GET /b HTTP/1.1\r\nx-ms-host: acs.example\r\nHost: 127.0.0.1:1\r\n\r\n";
        let expected = b"PUT /a?comp=block HTTP/1.1\r\nHost: emu:2\r\ncontent-length: 20\r\n\r\nHost: in the body!!\
GET /b HTTP/1.1\r\nx-ms-host: acs.example\r\nHost: emu:2\r\n\r\n";
        for piece in [1, 2, 3, 7, 64, input.len()] {
            let mut rewrite = HostRewrite::new("emu:2");
            let out = feed_in_pieces(&mut rewrite, input, piece);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(expected),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn a_chunked_body_or_an_endless_head_is_refused() {
        let mut rewrite = HostRewrite::new("h");
        assert!(rewrite
            .feed(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .is_err());
        let mut rewrite = HostRewrite::new("h");
        let endless = vec![b'a'; MAX_HEAD + 1];
        assert!(rewrite.feed(&endless).is_err());
    }

    #[tokio::test]
    async fn the_proxy_forwards_both_ways_with_the_host_rewritten() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_addr = target.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = target.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8(seen).unwrap()
        });
        let profile = link(1000, 0);
        let shaper = Shaper::start(target_addr, profile, Some("acs.example".into()))
            .await
            .unwrap();
        let mut client = TcpStream::connect(shaper.authority()).await.unwrap();
        let request = format!("GET /x HTTP/1.1\r\nHost: {}\r\n\r\n", shaper.authority());
        client.write_all(request.as_bytes()).await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
        assert_eq!(
            server.await.unwrap(),
            "GET /x HTTP/1.1\r\nHost: acs.example\r\n\r\n"
        );
        assert_eq!(shaper.take_peak(), (1, 1));
    }
}
