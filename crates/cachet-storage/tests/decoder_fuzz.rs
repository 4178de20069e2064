//! Property-based fuzzing of the container decoder (the machine has no nightly toolchain for
//! cargo-fuzz): whatever bytes it is given, the decoder never panics, and it never returns
//! content other than what was encoded.

use bytes::Bytes;
use cachet_core::{Compression, Error};
use cachet_storage::format::{FrameCompressor, FrameDecoder, decode_all, header, trailer};
use proptest::prelude::*;

fn encode(raw: &[u8], compression: Compression, frame: usize) -> Vec<u8> {
    let mut compressor = FrameCompressor::new(compression).unwrap();
    let mut out = header().to_vec();
    let mut frames = 0u32;
    for chunk in raw.chunks(frame) {
        compressor.encode_frame(chunk, &mut out).unwrap();
        frames += 1;
    }
    out.extend_from_slice(&trailer(
        frames,
        raw.len() as u64,
        xxhash_rust::xxh3::xxh3_128(raw),
    ));
    out
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        Just(Compression::Zstd(1))
    ]
}

/// Raw content that exercises every frame kind: runs, numeric arrays (shuffled), noise.
fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..3000),
        (0u64..5000, 1u64..7).prop_map(|(n, step)| (0..n)
            .flat_map(|i| ((i * step) as f64).to_le_bytes())
            .collect()),
        (any::<u8>(), 0usize..40_000).prop_map(|(b, n)| vec![b; n]),
    ]
}

#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, bit: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
    Overwrite { at: usize, bytes: Vec<u8> },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        any::<usize>().prop_map(|at| Damage::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert { at, byte }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..24)
        )
            .prop_map(|(at, bytes)| Damage::Overwrite { at, bytes }),
    ]
}

fn apply(stored: &mut Vec<u8>, damage: &Damage) {
    let len = stored.len();
    match damage {
        Damage::Flip { at, bit } => stored[at % len] ^= 1 << bit,
        Damage::Truncate { at } => stored.truncate(at % len),
        Damage::Insert { at, byte } => stored.insert(at % (len + 1), *byte),
        Damage::Overwrite { at, bytes } => {
            let start = at % len;
            for (i, b) in bytes.iter().enumerate() {
                if let Some(slot) = stored.get_mut(start + i) {
                    *slot = *b;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn damaged_containers_decode_to_the_original_or_fail(
        raw in content(),
        compression in compression(),
        frame in prop_oneof![Just(4096usize), Just(16_384), Just(65_536)],
        damages in proptest::collection::vec(damage(), 1..4),
    ) {
        let mut stored = encode(&raw, compression, frame);
        for d in &damages {
            if !stored.is_empty() {
                apply(&mut stored, d);
            }
        }
        match decode_all("fuzz", Bytes::from(stored), raw.len() as u64) {
            Ok((back, info)) => {
                prop_assert_eq!(&back[..], &raw[..], "damaged input decoded to other content");
                prop_assert_eq!(info.raw_size, raw.len() as u64);
            }
            Err(Error::Corrupt { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error kind: {other}"),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        prefix in prop_oneof![Just(Vec::new()), Just(header().to_vec())],
        noise in proptest::collection::vec(any::<u8>(), 0..2048),
        chunk in 1usize..300,
    ) {
        let input: Vec<u8> = prefix.into_iter().chain(noise).collect();
        let mut decoder = FrameDecoder::new("fuzz");
        let mut failed = false;
        for piece in input.chunks(chunk) {
            if decoder.feed(piece).is_err() {
                failed = true;
                break;
            }
            loop {
                match decoder.next_frame() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(_) => { failed = true; break; }
                }
            }
            if failed { break; }
        }
        if !failed {
            // Random bytes essentially never form a complete, checksummed container.
            prop_assert!(decoder.finish().is_err());
        }
    }
}
