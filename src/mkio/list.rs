//! Lists: `$top`, `$filter`, `$label` and `$label_key` query parameters (MKIO.md E.5), and
//! pages followed through `@odata.nextLink`, absolute or relative (E.4).

use super::client::MkioClient;
use super::error::MkioError;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// The most pages one listing follows; a server that keeps sending next links is cut off.
pub const MAX_PAGES: usize = 1000;

/// Everything but RFC 3986 unreserved characters is percent-encoded in a query value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Narrowing of a list request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// `$top`: the page size.
    pub top: Option<u32>,
    /// `$filter`, in OData syntax: `properties/resourceState eq 'Running'`.
    pub filter: Option<String>,
    /// `$label=key=value` (exact) or `$label=key~value` (partial), one parameter each.
    pub labels: Vec<String>,
    /// `$label_key=key`, one parameter each; all keys are required.
    pub label_keys: Vec<String>,
}

impl ListQuery {
    /// The encoded query string, without `?`; empty when nothing narrows the list.
    pub fn to_query_string(&self) -> String {
        let enc = |v: &str| utf8_percent_encode(v, QUERY_VALUE).to_string();
        let mut parts = Vec::new();
        if let Some(top) = self.top {
            parts.push(format!("$top={top}"));
        }
        if let Some(filter) = &self.filter {
            parts.push(format!("$filter={}", enc(filter)));
        }
        parts.extend(self.labels.iter().map(|l| format!("$label={}", enc(l))));
        parts.extend(
            self.label_keys
                .iter()
                .map(|k| format!("$label_key={}", enc(k))),
        );
        parts.join("&")
    }

    /// `path` with this query appended (after any query it already has).
    pub fn apply(&self, path: &str) -> String {
        let query = self.to_query_string();
        if query.is_empty() {
            path.to_owned()
        } else if path.contains('?') {
            format!("{path}&{query}")
        } else {
            format!("{path}?{query}")
        }
    }
}

/// One page of a list: its items and the link to the next page, verbatim.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    pub items: Vec<Value>,
    pub next: Option<String>,
}

impl MkioClient {
    /// One page: of `path` narrowed by `query`, or of a next link returned by a previous page
    /// (pass `None` then: the link already carries the query and `$skiptoken`).
    pub async fn list_page(
        &self,
        path_or_next_link: &str,
        query: Option<&ListQuery>,
    ) -> Result<Page, MkioError> {
        let target = match query {
            Some(query) => query.apply(path_or_next_link),
            None => path_or_next_link.to_owned(),
        };
        let mut body = self.get(&target).await?;
        let items = match body.get_mut("value").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(MkioError::Decode(format!(
                    "the list at {} has no `value` array",
                    path_of(&target)
                )))
            }
        };
        let next = body
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())
            .map(str::to_owned);
        Ok(Page { items, next })
    }

    /// Every item of `path`, following next links (at most [`MAX_PAGES`] pages).
    pub async fn list(&self, path: &str, query: &ListQuery) -> Result<Vec<Value>, MkioError> {
        self.list_up_to(path, query, usize::MAX).await
    }

    /// The first `max_items` items of `path`, following next links only as far as needed.
    pub async fn list_up_to(
        &self,
        path: &str,
        query: &ListQuery,
        max_items: usize,
    ) -> Result<Vec<Value>, MkioError> {
        let mut items = Vec::new();
        let mut page = self.list_page(path, Some(query)).await?;
        for pages in 1.. {
            items.append(&mut page.items);
            if items.len() >= max_items {
                items.truncate(max_items);
                break;
            }
            let Some(next) = page.next.take() else { break };
            if pages >= MAX_PAGES {
                return Err(MkioError::Refused(format!(
                    "{} has more than {MAX_PAGES} pages",
                    path_of(path)
                )));
            }
            page = self.list_page(&next, None).await?;
            if page.next.as_deref() == Some(next.as_str()) {
                return Err(MkioError::Decode(format!(
                    "the list at {} links to the same page again",
                    path_of(path)
                )));
            }
        }
        Ok(items)
    }
}

fn path_of(target: &str) -> &str {
    target.split('?').next().unwrap_or(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_encoded_and_repeated() {
        let q = ListQuery {
            top: Some(50),
            filter: Some("properties/resourceState eq 'Running' & x".into()),
            labels: vec!["env=prod".into(), "team~vid eo".into()],
            label_keys: vec!["owner".into(), "cost-center".into()],
        };
        assert_eq!(
            q.to_query_string(),
            "$top=50&$filter=properties%2FresourceState%20eq%20%27Running%27%20%26%20x\
             &$label=env%3Dprod&$label=team~vid%20eo&$label_key=owner&$label_key=cost-center"
        );
        assert_eq!(q.apply("/a?b=1").split_once('&').unwrap().0, "/a?b=1");
        assert_eq!(ListQuery::default().apply("/a"), "/a");
        assert_eq!(
            ListQuery {
                top: Some(2),
                ..Default::default()
            }
            .apply("/a"),
            "/a?$top=2"
        );
    }
}
