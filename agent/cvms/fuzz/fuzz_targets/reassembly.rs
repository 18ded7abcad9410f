//! Manifest chunk reassembly on arbitrary chunk sequences: it must never
//! panic, never hold more than its caps, keep ids apart, and return only
//! requests that decode (decode, encode, decode again gives the same).
//!
//! Input, read as a sequence of operations until it runs out:
//! - `0b00xx_xxxx`: a chunk for id `xx` (4 ids), `is_last` from bit 3, then
//!   a length byte and that many data bytes;
//! - `0b01..`: the clock moves on by the next byte in seconds;
//! - `0b1...`: expire.
#![no_main]

use std::time::{Duration, Instant};

use cocos_cvms::reassembly::{Reassembler, ReassemblyLimits};
use cocos_proto::cvms::{ComputationRunReq, RunReqChunks};
use cocos_proto::prost::Message;
use libfuzzer_sys::fuzz_target;

const LIMITS: ReassemblyLimits = ReassemblyLimits {
    max_bytes: 512,
    max_ids: 3,
    idle_timeout: Duration::from_secs(30),
};

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::new(LIMITS);
    let mut now = Instant::now();
    let mut input = data.iter().copied();
    while let Some(op) = input.next() {
        match op >> 6 {
            0 => {
                let id = format!("id{}", op & 3);
                let is_last = op & 8 != 0;
                let len = usize::from(input.next().unwrap_or(0));
                let bytes: Vec<u8> = input.by_ref().take(len).collect();
                let chunk = RunReqChunks { data: bytes, id: id.clone(), is_last };
                match r.push(chunk, now) {
                    Ok(Some(req)) => {
                        assert!(is_last, "completed without is_last");
                        assert!(!r.pending().contains(&id), "completed id still pending");
                        let again = ComputationRunReq::decode(req.encode_to_vec().as_slice())
                            .expect("a returned request re-encodes");
                        assert_eq!(again, req);
                    }
                    Ok(None) => {
                        assert!(!is_last, "last chunk gave nothing");
                        assert!(r.pending().contains(&id), "accepted chunk not held");
                    }
                    Err(e) => {
                        assert_eq!(e.id(), id, "error names another id");
                        assert!(!r.pending().contains(&id), "refused id still pending");
                    }
                }
            }
            1 => now += Duration::from_secs(u64::from(input.next().unwrap_or(0))),
            _ => {
                for id in r.expire(now) {
                    assert!(!r.pending().contains(&id));
                }
            }
        }
        assert!(r.pending().len() <= LIMITS.max_ids);
        assert!(r.held_bytes() <= LIMITS.max_ids * LIMITS.max_bytes);
    }
});
