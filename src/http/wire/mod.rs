//! The JSON of the public API, each shape written once: the handlers build the
//! response types of these modules, the strict parsers (`body.rs`, `query.rs`)
//! produce the request types, and the OpenAPI document (`openapi.rs`) describes
//! these same types, so what is documented is what is sent and read. Requests are
//! still read field by field rather than by serde, so that every problem is
//! reported with its item index and field; the schemas state the limits that
//! reading enforces (names of 1–256 UTF-8 bytes without control characters,
//! TTLs of 1–31,536,000 s, batch sizes), so generated clients get typed values.
//!
//! The domain types that requests parse into get their schemas here too
//! ([`Resource`], [`Requester`], [`Tier`] ...): the rules live in `domain`, their
//! description on the wire lives next to the shapes that carry them.
//!
//! One file per part of the API: [`reservations`] (batches, results, the
//! listing), [`events`] (the stream's query), [`token`] (JWT exchange),
//! [`locklock`], [`admin`], and [`error`] (the error body and the error sets of
//! the document). This file gives the domain types their schemas.

pub mod admin;
pub mod error;
pub mod events;
pub mod locklock;
pub mod reservations;
pub mod token;

pub use admin::*;
pub use error::*;
pub use events::*;
pub use locklock::*;
pub use reservations::*;
pub use token::*;

use crate::domain::{
    KeyLabel, KeyScope, ReleaseToken, Requester, Resource, TenantId, TenantName, Tier, Ttl,
    WarnBefore, MAX_NAME_BYTES, MAX_TTL_SECONDS,
};
use crate::tokens::JwtSettings;
use serde::Serialize;
use std::borrow::Cow;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, PartialSchema, ToSchema};

/// Section 1 strings: no C0 control character and no DEL (JSON Schema counts
/// characters, so the 256-byte limit is also stated in each description).
const NAME_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F]+$";

fn name_schema(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_BYTES))
        .pattern(Some(NAME_PATTERN))
        .description(Some(description))
        .into()
}

macro_rules! schema_of {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

schema_of!(
    Resource,
    "Resource",
    name_schema("A resource name (or prefix): 1–256 UTF-8 bytes, no control characters.")
);
schema_of!(
    Requester,
    "Requester",
    name_schema("Who holds or asks: 1–256 UTF-8 bytes, no control characters.")
);
schema_of!(
    KeyLabel,
    "KeyLabel",
    name_schema("An API key's label: 1–256 UTF-8 bytes, no control characters.")
);
schema_of!(
    TenantName,
    "TenantName",
    name_schema("A tenant's name: 1–256 UTF-8 bytes, no control characters.")
);
schema_of!(
    ReleaseToken,
    "ReleaseTokenIn",
    name_schema(
        "The releaseToken a reserve answered (a UUID); any 1–256-byte string is accepted, \
         a wrong one is INVALID_TOKEN."
    )
);
schema_of!(
    TenantId,
    "TenantId",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uuid".into())))
        .description(Some("A tenant id (a UUID)."))
        .into()
);
schema_of!(
    Ttl,
    "TtlSeconds",
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_TTL_SECONDS))
        .description(Some("Seconds, 1 to 31,536,000 (one year)."))
        .into()
);
schema_of!(
    WarnBefore,
    "WarnBeforeSeconds",
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_TTL_SECONDS - 1))
        .description(Some(
            "Seconds before expiresAt for the EXPIRING event (contract section 18): at least 1 and below the item's ttlSeconds.",
        ))
        .into()
);
schema_of!(
    KeyScope,
    "KeyScope",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["read", "write"]))
        .description(Some(
            "What an API key may do: write (every tenant route) or read (check, list, validate and the event stream; anything else is 403 FORBIDDEN).",
        ))
        .into()
);
schema_of!(
    Tier,
    "Tier",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["free", "starter", "pro", "enterprise"]))
        .description(Some("A tenant's tier."))
        .into()
);

/// The request objects: read strictly, so a field they do not name is a 400.
/// [`StrictRequests`] says so in the document (`additionalProperties: false`).
fn request_objects() -> [Cow<'static, str>; 13] {
    [
        ReserveItem::name(),
        ReleaseItem::name(),
        ExtendItem::name(),
        CheckItem::name(),
        ValidateItem::name(),
        TokenRequest::name(),
        LockOptions::name(),
        LockSecret::name(),
        TenantCreate::name(),
        TenantPatch::name(),
        LeasePolicyPatch::name(),
        KeyCreate::name(),
        JwtSettings::name(),
    ]
}

/// Marks every request object closed (`additionalProperties: false`): the
/// parsers refuse unknown fields. (utoipa derives that only from serde's
/// `deny_unknown_fields`, and these types are not read by serde.)
pub struct StrictRequests;

impl Modify for StrictRequests {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        for name in request_objects() {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(&*name) {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` (liveness) or `ready` (readiness).
    pub status: &'static str,
}
