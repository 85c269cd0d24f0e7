//! List queries (MKIO.md E.4, E.5): `$top`, opaque `$skiptoken`, `$filter` equality clauses,
//! `$label` / `$label_key`, and the `{ value, supplemental, @odata.nextLink }` page.

use super::error::ApiError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Page size when `$top` is absent, and the largest one served.
pub(crate) const DEFAULT_TOP: usize = 100;
pub(crate) const MAX_TOP: usize = 100;

const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'$');

#[derive(Debug, Clone, PartialEq)]
enum Label {
    Exact(String, String),
    Partial(String, String),
    Key(String),
}

/// A parsed list request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListQuery {
    pub top: usize,
    pub skip: usize,
    /// `(path segments, negated, value)`, all of which must hold.
    filter: Vec<(Vec<String>, bool, String)>,
    labels: Vec<Label>,
}

impl ListQuery {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut q = ListQuery {
            top: DEFAULT_TOP,
            skip: 0,
            filter: vec![],
            labels: vec![],
        };
        for (k, v) in pairs {
            match k.as_str() {
                "$top" => {
                    let top: usize = v
                        .parse()
                        .map_err(|_| ApiError::bad_request("$top must be a positive integer"))?;
                    q.top = top.clamp(1, MAX_TOP);
                }
                "$skiptoken" => q.skip = decode_token(v)?,
                "$filter" => q.filter.extend(parse_filter(v)?),
                "$label" => q.labels.push(parse_label(v)?),
                "$label_key" => q.labels.push(Label::Key(v.clone())),
                _ => {}
            }
        }
        Ok(q)
    }

    /// Whether a rendered resource passes `$filter` and the label conditions.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>, v: &Value) -> bool {
        let filter_ok = self.filter.iter().all(|(path, neg, want)| {
            let got = if path.len() == 1 && path[0] == "name" {
                Some(name.to_string())
            } else {
                path.iter()
                    .try_fold(v, |v, seg| v.get(seg))
                    .and_then(scalar)
            };
            (got.as_deref() == Some(want.as_str())) != *neg
        });
        filter_ok
            && self.labels.iter().all(|l| match l {
                Label::Exact(k, want) => labels.get(k) == Some(want),
                Label::Partial(k, part) => labels.get(k).is_some_and(|v| v.contains(part.as_str())),
                Label::Key(k) => labels.contains_key(k),
            })
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    }
}

fn parse_label(v: &str) -> Result<Label, ApiError> {
    if let Some((k, val)) = v.split_once('=') {
        Ok(Label::Exact(k.to_string(), val.to_string()))
    } else if let Some((k, val)) = v.split_once('~') {
        Ok(Label::Partial(k.to_string(), val.to_string()))
    } else {
        Err(ApiError::bad_request(
            "$label must be key=value or key~partial",
        ))
    }
}

/// `<path> eq '<value>' [and ...]`, with `ne` too; anything else is a 400.
fn parse_filter(f: &str) -> Result<Vec<(Vec<String>, bool, String)>, ApiError> {
    let bad = || ApiError::bad_request(format!("unsupported $filter: {f}"));
    let mut out = vec![];
    let mut rest = f.trim();
    loop {
        let (path, after) = rest.split_once(' ').ok_or_else(bad)?;
        let after = after.trim_start();
        let (op, after) = after.split_once(' ').ok_or_else(bad)?;
        let neg = match op {
            "eq" => false,
            "ne" => true,
            _ => return Err(bad()),
        };
        let after = after.trim_start().strip_prefix('\'').ok_or_else(bad)?;
        // A quote inside the value is written twice ('').
        let mut value = String::new();
        let mut chars = after.char_indices().peekable();
        let end = loop {
            match chars.next() {
                Some((_, '\'')) if chars.peek().map(|c| c.1) == Some('\'') => {
                    value.push('\'');
                    chars.next();
                }
                Some((i, '\'')) => break i + 1,
                Some((_, c)) => value.push(c),
                None => return Err(bad()),
            }
        };
        out.push((path.split('/').map(str::to_string).collect(), neg, value));
        rest = after[end..].trim_start();
        if rest.is_empty() {
            return Ok(out);
        }
        rest = rest
            .strip_prefix("and ")
            .or_else(|| rest.strip_prefix("AND "))
            .ok_or_else(bad)?
            .trim_start();
    }
}

fn encode_token(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("mkio-sim:{offset}"))
}

fn decode_token(t: &str) -> Result<usize, ApiError> {
    URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("mkio-sim:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| ApiError::bad_request("invalid $skiptoken"))
}

/// Where the page came from, to build `@odata.nextLink` and `supplemental`.
pub(crate) struct PageCtx<'a> {
    pub path: &'a str,
    pub pairs: &'a [(String, String)],
    /// `Some(base URL)` for absolute links.
    pub base_url: Option<&'a str>,
    pub kind: &'a str,
    pub subscription: Value,
}

/// One page of the already filtered `items`.
pub(crate) fn page(items: Vec<Value>, q: &ListQuery, ctx: &PageCtx) -> Value {
    let total = items.len();
    let start = q.skip.min(total);
    let value: Vec<Value> = items.into_iter().skip(start).take(q.top).collect();
    let end = start + value.len();
    let mut body = json!({
        "value": value,
        "supplemental": {
            "count": end - start, "kind": ctx.kind, "operation": "list",
            "pagination": { "start": start, "end": end, "records": end - start, "total": total },
            "subscription": ctx.subscription,
        },
    });
    if end < total {
        let mut query: Vec<String> = ctx
            .pairs
            .iter()
            .filter(|(k, _)| k != "$top" && k != "$skiptoken")
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(k, QUERY),
                    utf8_percent_encode(v, QUERY)
                )
            })
            .collect();
        query.push(format!("$top={}", q.top));
        query.push(format!("$skiptoken={}", encode_token(end)));
        let link = format!(
            "{}{}?{}",
            ctx.base_url.unwrap_or(""),
            ctx.path,
            query.join("&")
        );
        body["@odata.nextLink"] = json!(link);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_on_name_and_state_paths_and_labels() {
        let v = json!({"name": "a", "properties": {"resourceState": "Running"}});
        let labels = BTreeMap::from([("team".to_string(), "newsroom".to_string())]);
        let q = |f: &str| ListQuery::parse(&pairs(&[("$filter", f)])).unwrap();
        assert!(q("properties/resourceState eq 'Running'").matches("a", &labels, &v));
        assert!(
            q("name eq 'a' and properties/resourceState ne 'Stopped'").matches("a", &labels, &v)
        );
        assert!(!q("name eq 'b'").matches("a", &labels, &v));
        assert!(q("name eq 'it''s'").matches("it's", &labels, &v));
        assert!(ListQuery::parse(&pairs(&[("$filter", "name gt 'a'")])).is_err());
        let l = |k: &str, val: &str| ListQuery::parse(&pairs(&[(k, val)])).unwrap();
        assert!(l("$label", "team=newsroom").matches("a", &labels, &v));
        assert!(l("$label", "team~news").matches("a", &labels, &v));
        assert!(!l("$label", "team=news").matches("a", &labels, &v));
        assert!(l("$label_key", "team").matches("a", &labels, &v));
        assert!(!l("$label_key", "tier").matches("a", &labels, &v));
    }

    #[test]
    fn pages_link_to_the_next_offset_until_the_end() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let p = pairs(&[("$top", "2"), ("$filter", "name eq 'x y'")]);
        let q = ListQuery::parse(&p).unwrap();
        let ctx = PageCtx {
            path: "/c",
            pairs: &p,
            base_url: Some("http://h"),
            kind: "Job",
            subscription: json!({}),
        };
        let first = page(items.clone(), &q, &ctx);
        let link = first["@odata.nextLink"].as_str().unwrap();
        assert!(
            link.starts_with("http://h/c?$filter=name%20eq%20%27x%20y%27&$top=2&$skiptoken="),
            "{link}"
        );
        let token = link.rsplit('=').next().unwrap();
        let q2 = ListQuery::parse(&pairs(&[("$top", "2"), ("$skiptoken", token)])).unwrap();
        assert_eq!(q2.skip, 2);
        let last = page(items, &ListQuery { skip: 4, ..q2 }, &ctx);
        assert_eq!(
            last["supplemental"]["pagination"],
            json!({"start": 4, "end": 5, "records": 1, "total": 5})
        );
        assert!(last.get("@odata.nextLink").is_none());
        assert!(ListQuery::parse(&pairs(&[("$skiptoken", "garbage!")])).is_err());
    }
}
