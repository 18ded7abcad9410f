//! The commands that talk to the agent (`agent.AgentService`): `algo`,
//! `data` and `result`. Each signs its call (cocos-auth's canonical
//! request, or with `--legacy-auth` the Go CLI's role string), dials the
//! agent's ingress over TLS (or explicit plaintext), streams in 1 MiB
//! chunks, and turns a gRPC status into one line and an exit status
//! ([`failure`]).

pub mod connect;
pub mod failure;
pub mod result;
pub mod sign;
pub mod stream;
pub mod upload;
