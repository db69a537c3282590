//! Strict reading of client JSON: the body must be JSON of the right shape, with
//! no unknown or duplicate fields, and every problem is reported with the item
//! index and field it concerns. Nothing here panics on any input.

use super::error::ApiError;
use super::wire::Detail;
use actix_web::http::header;
use actix_web::HttpRequest;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

/// Most `details` entries sent back for one request.
const MAX_DETAILS: usize = 50;

/// Refuses a body whose declared type is not JSON. A missing `Content-Type` is
/// accepted, so that plain `curl -d` callers are not punished for it... except
/// that curl then sends `application/x-www-form-urlencoded`, which is refused
/// with a message saying what to send.
pub fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be application/json (got {essence:?})"
        )))
    }
}

/// A JSON object kept as its fields in order, duplicates included, so they can
/// be refused instead of silently taking the last one.
pub struct Object(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    fields.push((k, v));
                }
                Ok(Object(fields))
            }
        }
        d.deserialize_map(V)
    }
}

fn syntax_message(e: &serde_json::Error) -> String {
    format!("the body is not valid JSON: {e}")
}

fn utf8(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|e| {
        ApiError::invalid(format!(
            "the body is not valid UTF-8 (first bad byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// Parses a batch body: a JSON array of 0..=`max_items` objects.
pub fn parse_batch(body: &[u8], max_items: usize) -> Result<Vec<Object>, ApiError> {
    let text = utf8(body)?;
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            "the body is empty; send a JSON array of items, e.g. [{\"resource\":\"r\",\"requester\":\"me\"}]",
        ));
    }
    let raw: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            ApiError::invalid("the body must be a JSON array of item objects")
        } else {
            ApiError::invalid(syntax_message(&e))
        }
    })?;
    if raw.len() > max_items {
        return Err(ApiError::InvalidRequest {
            message: format!(
                "a batch holds at most {max_items} items (got {}); split it",
                raw.len()
            ),
            details: vec![Detail {
                index: None,
                field: None,
                problem: format!("{} items, limit {max_items}", raw.len()),
            }],
        });
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut details = Vec::new();
    for (i, item) in raw.iter().enumerate() {
        match serde_json::from_str::<Object>(item.get()) {
            Ok(obj) => out.push(obj),
            Err(e) => push_detail(
                &mut details,
                Detail {
                    index: Some(i),
                    field: None,
                    problem: if e.is_data() {
                        "must be a JSON object".into()
                    } else {
                        format!("is not valid JSON: {e}")
                    },
                },
            ),
        }
    }
    if details.is_empty() {
        Ok(out)
    } else {
        Err(invalid_items(details))
    }
}

/// Parses a body that must be one JSON object (admin requests). An empty body
/// counts as `{}` when `empty_ok`.
pub fn parse_object(body: &[u8], empty_ok: bool) -> Result<Object, ApiError> {
    let text = utf8(body)?;
    if text.trim().is_empty() {
        return if empty_ok {
            Ok(Object(Vec::new()))
        } else {
            Err(ApiError::invalid("the body is empty; send a JSON object"))
        };
    }
    serde_json::from_str::<Object>(text).map_err(|e| {
        if e.is_data() {
            ApiError::invalid("the body must be a JSON object")
        } else {
            ApiError::invalid(syntax_message(&e))
        }
    })
}

fn push_detail(details: &mut Vec<Detail>, d: Detail) {
    if details.len() < MAX_DETAILS {
        details.push(d);
    }
}

pub fn invalid_items(details: Vec<Detail>) -> ApiError {
    let first = details
        .first()
        .map(|d| {
            let at = d.index.map(|i| format!("item {i}: ")).unwrap_or_default();
            let field = d
                .field
                .as_deref()
                .map(|f| format!("{f} "))
                .unwrap_or_default();
            format!("{at}{field}{}", d.problem)
        })
        .unwrap_or_default();
    let more = if details.len() > 1 {
        format!(" (and {} more problem(s), see details)", details.len() - 1)
    } else {
        String::new()
    };
    ApiError::InvalidRequest {
        message: format!("{first}{more}"),
        details,
    }
}

/// Reads the fields of one object against a list of allowed names, collecting
/// every problem into `details`.
pub struct Fields<'a> {
    index: Option<usize>,
    fields: Vec<(String, Value)>,
    details: &'a mut Vec<Detail>,
}

impl<'a> Fields<'a> {
    pub fn new(
        index: Option<usize>,
        obj: Object,
        allowed: &[&str],
        details: &'a mut Vec<Detail>,
    ) -> Self {
        let mut seen: Vec<&str> = Vec::new();
        for (k, _) in &obj.0 {
            if !allowed.contains(&k.as_str()) {
                push_detail(
                    details,
                    Detail::field(
                        index,
                        k,
                        format!("unknown field; allowed: {}", allowed.join(", ")),
                    ),
                );
            } else if seen.contains(&k.as_str()) {
                push_detail(details, Detail::field(index, k, "appears more than once"));
            } else {
                seen.push(k);
            }
        }
        Self {
            index,
            fields: obj.0,
            details,
        }
    }

    pub fn problem(&mut self, field: &str, problem: impl Into<String>) {
        push_detail(self.details, Detail::field(self.index, field, problem));
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        let pos = self.fields.iter().position(|(k, _)| k == name)?;
        Some(self.fields.swap_remove(pos).1)
    }

    /// A required string field, parsed by `parse`.
    pub fn string<T, E: fmt::Display>(
        &mut self,
        name: &str,
        parse: impl FnOnce(String) -> Result<T, E>,
    ) -> Option<T> {
        match self.take(name) {
            None | Some(Value::Null) => {
                self.problem(name, "is required");
                None
            }
            Some(Value::String(s)) => match parse(s) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.problem(name, e.to_string());
                    None
                }
            },
            Some(_) => {
                self.problem(name, "must be a string");
                None
            }
        }
    }

    /// An optional string field: `Ok(None)` when absent or null.
    pub fn opt_string<T, E: fmt::Display>(
        &mut self,
        name: &str,
        parse: impl FnOnce(String) -> Result<T, E>,
    ) -> Option<Option<T>> {
        match self.take(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => match parse(s) {
                Ok(v) => Some(Some(v)),
                Err(e) => {
                    self.problem(name, e.to_string());
                    None
                }
            },
            Some(_) => {
                self.problem(name, "must be a string");
                None
            }
        }
    }

    /// An optional non-negative integer field: `Some(None)` when absent or null,
    /// `None` after recording a problem.
    pub fn opt_u64(&mut self, name: &str) -> Option<Option<u64>> {
        match self.take(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Some(Some(v)),
                None => {
                    self.problem(name, "must be a whole number of seconds");
                    None
                }
            },
            Some(_) => {
                self.problem(name, "must be an integer");
                None
            }
        }
    }

    /// A required non-negative integer field (`what` says what it is, for
    /// the problem's text); `None` after recording a problem.
    /// A required integer from 0 to 2^63 - 1 (an OpenAPI `int64`).
    pub fn u64(&mut self, name: &str, what: &str) -> Option<u64> {
        let problem = format!("must be a non-negative integer ({what}) up to {}", i64::MAX);
        match self.take(name) {
            None | Some(Value::Null) => {
                self.problem(name, "is required");
                None
            }
            Some(Value::Number(n)) => {
                let v = n.as_u64().filter(|v| *v <= i64::MAX as u64);
                if v.is_none() {
                    self.problem(name, problem);
                }
                v
            }
            Some(_) => {
                self.problem(name, problem);
                None
            }
        }
    }

    /// Whether the field was present at all (even as null).
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == name)
    }

    /// Takes a field's raw JSON value.
    pub fn raw(&mut self, name: &str) -> Option<Value> {
        self.take(name)
    }
}
