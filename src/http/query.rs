//! Strict query strings: only known parameters, each at most once, valid
//! percent-encoded UTF-8. Anything else is a 400 that names the parameter.

use super::error::ApiError;
use std::fmt;

pub struct Query {
    pairs: Vec<(String, String)>,
}

fn decode(part: &str) -> Option<String> {
    let spaced = part.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

impl Query {
    pub fn parse(raw: &str, allowed: &[&str]) -> Result<Self, ApiError> {
        Self::parse_repeatable(raw, allowed, &[])
    }

    /// Like [`Query::parse`], but the parameters in `repeatable` may appear
    /// several times (read them with [`Query::take_all`]).
    pub fn parse_repeatable(
        raw: &str,
        allowed: &[&str],
        repeatable: &[&str],
    ) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let (Some(k), Some(v)) = (decode(k), decode(v)) else {
                return Err(ApiError::invalid(
                    "the query string is not valid percent-encoded UTF-8",
                ));
            };
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::invalid_field(
                    &k,
                    format!(
                        "is not a known query parameter; allowed: {}",
                        allowed.join(", ")
                    ),
                ));
            }
            if !repeatable.contains(&k.as_str()) && pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(ApiError::invalid_field(&k, "appears more than once"));
            }
            pairs.push((k, v));
        }
        Ok(Self { pairs })
    }

    pub fn take(&mut self, name: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(k, _)| k == name)?;
        Some(self.pairs.swap_remove(i).1)
    }

    /// Every value of a repeatable parameter, in order.
    pub fn take_all(&mut self, name: &str) -> Vec<String> {
        let (taken, kept) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition(|(k, _)| k == name);
        self.pairs = kept;
        taken.into_iter().map(|(_, v)| v).collect()
    }

    /// An optional parameter parsed by `parse` (the section 1 string rules).
    pub fn string<T, E: fmt::Display>(
        &mut self,
        name: &str,
        parse: impl FnOnce(String) -> Result<T, E>,
    ) -> Result<Option<T>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => parse(v)
                .map(Some)
                .map_err(|e| ApiError::invalid_field(name, e.to_string())),
        }
    }

    /// An optional `true`/`false` parameter.
    pub fn boolean(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.take(name).as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(ApiError::invalid_field(name, "must be true or false")),
        }
    }

    /// An optional integer parameter within `min..=max`.
    pub fn integer(&mut self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::invalid_field(
                    name,
                    format!("must be an integer from {min} to {max}"),
                )),
            },
        }
    }
}
