//! `GET /api/v1/events`: its query (the event data is [`crate::events::EventData`],
//! built by the events module).

use crate::domain::{Requester, Resource};
use crate::events::EventKind;
use utoipa::IntoParams;

/// The query of `GET /api/v1/events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only these resources (repeatable, up to 100)
    #[param(max_items = 100)]
    pub resource: Option<Vec<Resource>>,
    /// Only resources starting with it
    pub prefix: Option<Resource>,
    /// Only these event types, comma-separated (RESERVED, UNRESERVED,
    /// EXTENDED, EXPIRED, FORCE_RELEASED, EXPIRING)
    #[param(style = Form, explode = false)]
    pub types: Option<Vec<EventKind>>,
    /// Only the events of these requesters (repeatable, exact, up to 100):
    /// a holder following its own leases sees EXPIRED and FORCE_RELEASED
    /// when it loses one
    #[param(max_items = 100)]
    pub requester: Option<Vec<Requester>>,
}
