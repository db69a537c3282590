//! This instance's fan-out of live events to its Server-Sent-Events clients:
//! [`hub::Hub`] keeps one store subscription per tenant with streams open here
//! and hands each event to every matching client's bounded queue;
//! [`sse::stream`] turns a subscription (plus history to replay, read from the
//! store) into the bytes of one `text/event-stream` response.
//!
//! The event values themselves live in [`crate::events`], which the store
//! depends on; this module depends on the store, so they are apart.

pub mod hub;
pub mod sse;
