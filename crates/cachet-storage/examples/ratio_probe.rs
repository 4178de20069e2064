//! Compression ratio and encode speed of the frame compressor on three kinds of data.
//! `cargo run --release -p cachet-storage --example ratio_probe`
use cachet_core::Compression;
use cachet_storage::format::FrameCompressor;

fn main() {
    let words = [
        "cache",
        "blob",
        "index",
        "frame",
        "value",
        "error",
        "commit",
        "2026-11-23",
        "INFO",
        "latency=12ms",
    ];
    let arange: Vec<u8> = (0..(8u64 << 20))
        .flat_map(|i| (i as f64).to_le_bytes())
        .collect();
    let random: Vec<u8> = (0..(8u64 << 20))
        .flat_map(|i| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()).to_le_bytes())
        .collect();
    let text: Vec<u8> = (0..(6u64 << 20))
        .flat_map(|i| {
            format!(
                "{} ",
                words[(xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()) % 10) as usize]
            )
            .into_bytes()
        })
        .take(64 << 20)
        .collect();
    for (name, data) in [
        ("arange f64", &arange),
        ("random", &random),
        ("text", &text),
    ] {
        for compression in [Compression::Lz4, Compression::Zstd(1), Compression::Zstd(3)] {
            let mut c = FrameCompressor::new(compression).expect("compressor");
            let mut out = Vec::with_capacity(2 << 20);
            let started = std::time::Instant::now();
            let mut total = 0usize;
            for frame in data.chunks(1 << 20) {
                out.clear();
                c.encode_frame(frame, &mut out).expect("encode");
                total += out.len();
            }
            let secs = started.elapsed().as_secs_f64();
            let mut stored = cachet_storage::format::header().to_vec();
            let mut frames = 0u32;
            for frame in data.chunks(1 << 20) {
                c.encode_frame(frame, &mut stored).expect("encode");
                frames += 1;
            }
            stored.extend_from_slice(&cachet_storage::format::trailer(
                frames,
                data.len() as u64,
                xxhash_rust::xxh3::xxh3_128(data),
            ));
            let started = std::time::Instant::now();
            let mut decoder = cachet_storage::format::FrameDecoder::new("probe");
            decoder.feed(&stored).expect("feed");
            while decoder.next_frame().expect("decode").is_some() {}
            decoder.finish().expect("verified");
            let decode_secs = started.elapsed().as_secs_f64();
            let gib = data.len() as f64 / f64::from(1u32 << 30);
            println!(
                "{name:>10} {compression:>7}: stored {:6.2}% of raw, encode {:5.2} GiB/s, decode+verify {:5.2} GiB/s",
                100.0 * total as f64 / data.len() as f64,
                gib / secs,
                gib / decode_secs
            );
        }
    }
}
