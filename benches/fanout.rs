//! Fan-out benchmarks: the per-recipient cost of one broadcast after it was encoded once.
//! `queue_push` hands the same `Bytes` to N connection queues (the real hot path: a reference
//! count and a latest-wins slot per connection); `copy_to_sinks` copies the frame into N
//! in-memory buffers, the memory-bandwidth floor of writing it to N sockets.
//! Run: `cargo bench --bench fanout`.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use spectra::transport::outbound::{FrameKind, OutQueue};
use spectra::transport::{packets, websocket};

/// A snapshot-sized packet (about 13.5 KB of escaped JSON, like a mid-match state).
fn frame() -> Bytes {
    let state = format!(
        "{{\"players\":[{}],\"roundNumber\":7}}",
        (0..10)
            .map(|i| format!(
                "{{\"name\":\"Player{i}\",\"agentInternal\":\"Clay_PC_C\",\"money\":{},\"kills\":{i},\"abilities\":[1,2,3],\"inventory\":\"{}\"}}",
                i * 450,
                "x".repeat(1100)
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let packet = packets::event_packet("match_data", &state);
    websocket::text_frame(&packet)
}

fn bench(c: &mut Criterion) {
    let frame = frame();
    let mut group = c.benchmark_group("fanout");
    for n in [100usize, 1_000, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        let queues: Vec<_> = (0..n).map(|_| OutQueue::new()).collect();
        group.bench_with_input(BenchmarkId::new("queue_push", n), &n, |b, _| {
            b.iter(|| {
                for q in &queues {
                    q.push(frame.clone(), FrameKind::Snapshot);
                }
            })
        });
        let mut sinks: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity(frame.len())).collect();
        group.bench_with_input(BenchmarkId::new("copy_to_sinks", n), &n, |b, _| {
            b.iter(|| {
                for s in sinks.iter_mut() {
                    s.clear();
                    s.extend_from_slice(&frame);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
