//! Plain data of the audit: managed identities as Graph lists them, the ARM resource ids their
//! `alternativeNames` point at, and the verdicts the judge gives. No I/O here, no sqlx or reqwest types.
//!
//! `alternativeNames` is parsed by shape, never by position: community scripts note that the resource id
//! does not always stand at the same index (docs/azure-behaviour.md §1, "Response shape").
//!
//! - `ids`: [`TenantId`], [`ObjectId`], [`SubscriptionId`], trimmed and lower-cased once, where they enter.
//! - `resource`: [`ResourceId`] and its [`Scope`], parsed strictly.
//! - `identity`: [`ManagedIdentity`] and its [`IdentityType`], from `alternativeNames`.
//! - `verdict`: what the judge decides and every stage after it shares: [`Verdict`], [`Reason`],
//!   [`Evidence`], [`Judgement`], [`Finding`], [`Summary`], [`Trigger`].
//! - `notify`: the events a notification sink subscribes to ([`EventType`]) and its kind ([`SinkKind`]).

mod identity;
mod ids;
mod notify;
mod resource;
mod roles;
mod suppression;
mod verdict;

pub use identity::*;
pub use ids::*;
pub use notify::*;
pub use resource::*;
pub use roles::*;
pub use suppression::*;
pub use verdict::*;
