//! The manifest in the management service's wire form: the validated
//! manifest (`cocos_manifest::Manifest`, read from the JSON form) as
//! `cvms.ComputationRunReq`, and the messages that carry it to the agent —
//! `RunReqChunks` of at most 1 MiB or one `runReq` (agent-api §2.1).
//!
//! cocos-manifest converts wire → manifest (`Manifest::from_wire`) but not
//! the reverse; this module is that reverse.

use cocos_manifest::Manifest;
use cocos_manifest::json::{Kbs, Source};
use cocos_proto::cvms::{self, ServerStreamMessage, server_stream_message::Message};
use cocos_proto::prost::Message as _;

/// Largest `RunReqChunks.data` (agent-api §2.1: chunks of ≤ 1 MiB).
pub const MAX_CHUNK: usize = 1 << 20;

fn source(s: &Option<Source>) -> Option<cvms::Source> {
    s.as_ref().map(|s| cvms::Source {
        r#type: s.r#type.clone(),
        url: s.url.clone(),
        kbs_resource_path: s.kbs_resource_path.clone(),
        encrypted: s.encrypted,
    })
}

fn kbs(k: &Option<Kbs>) -> Option<cvms::KbsConfig> {
    k.as_ref().map(|k| cvms::KbsConfig {
        url: k.url.clone(),
        enabled: k.enabled,
    })
}

/// The manifest as `cvms.ComputationRunReq`. Keys travel as DER
/// SubjectPublicKeyInfo and hashes as their 32 bytes; an absent
/// requirements hash is empty bytes (proto3 has no presence for bytes).
pub fn run_request(m: &Manifest) -> cvms::ComputationRunReq {
    let a = &m.algorithm;
    cvms::ComputationRunReq {
        id: m.id.clone(),
        name: m.name.clone(),
        description: m.description.clone(),
        datasets: m
            .datasets
            .iter()
            .map(|d| cvms::Dataset {
                hash: d.hash.to_vec(),
                user_key: d.user_key.der.clone(),
                filename: d.filename.clone(),
                source: source(&d.source),
                decompress: d.decompress,
                kbs: kbs(&d.kbs),
            })
            .collect(),
        algorithm: Some(cvms::Algorithm {
            hash: a.hash.to_vec(),
            user_key: a.user_key.der.clone(),
            source: source(&a.source),
            algo_type: a.algo_type.as_str().to_string(),
            algo_args: a.algo_args.clone(),
            kbs: kbs(&a.kbs),
            requirements_hash: a.requirements_hash.map(|h| h.to_vec()).unwrap_or_default(),
        }),
        result_consumers: m
            .result_consumers
            .iter()
            .map(|k| cvms::ResultConsumer {
                user_key: k.der.clone(),
            })
            .collect(),
        agent_config: m.agent_config.clone(),
    }
}

/// The proto encoding of `req` in `RunReqChunks` of at most
/// [`MAX_CHUNK`] bytes, each keyed by the computation id, the last marked
/// `is_last`.
pub fn chunks(req: &cvms::ComputationRunReq) -> Vec<cvms::RunReqChunks> {
    let bytes = req.encode_to_vec();
    let pieces: Vec<&[u8]> = if bytes.is_empty() {
        vec![&[]]
    } else {
        bytes.chunks(MAX_CHUNK).collect()
    };
    let n = pieces.len();
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, data)| cvms::RunReqChunks {
            data: data.to_vec(),
            id: req.id.clone(),
            is_last: i + 1 == n,
        })
        .collect()
}

/// The messages that send the manifest: its chunks, or with `unchunked`
/// one `runReq`.
pub fn run_messages(m: &Manifest, unchunked: bool) -> Vec<ServerStreamMessage> {
    let req = run_request(m);
    if unchunked {
        return vec![ServerStreamMessage {
            message: Some(Message::RunReq(req)),
        }];
    }
    chunks(&req)
        .into_iter()
        .map(|c| ServerStreamMessage {
            message: Some(Message::RunReqChunks(c)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_at_one_mebibyte_and_mark_only_the_last() {
        let req = cvms::ComputationRunReq {
            id: "c".into(),
            description: "x".repeat(MAX_CHUNK + 10),
            ..Default::default()
        };
        let c = chunks(&req);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].data.len(), MAX_CHUNK);
        assert!(!c[0].is_last && c[1].is_last);
        assert!(c.iter().all(|c| c.id == "c"));
        let joined: Vec<u8> = c.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(
            cvms::ComputationRunReq::decode(joined.as_slice()).unwrap(),
            req
        );
    }
}
