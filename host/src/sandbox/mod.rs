//! What a pump grants its plugins on the network, as parsed values: the
//! `sandbox.allowed_outbound_hosts` and `sandbox.sockets` entries and the
//! rule of which addresses are non-public. A leaf: it depends on nothing
//! else in the crate, so `config` can deserialize into these types and
//! `runtime` can enforce them without either importing the other's
//! internals.

pub mod allow;

pub use allow::{find_rule, is_non_public, OutboundRule, RuleError, Scheme, SocketRule};
