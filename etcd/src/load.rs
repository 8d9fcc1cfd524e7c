//! The full load: a paginated range get of the prefix at one revision.
//!
//! The first page is read at the current revision `R` (etcd's response
//! header names it); every later page is read *at `R`*
//! (`with_revision(R)`) from the key after the last one received, so the
//! pages together are the prefix exactly as of `R`, however long the load
//! takes and whatever is written meanwhile. A page holds at most
//! `page_size` keys; a page that exceeds the client's message limit
//! (4 MiB by default; tonic answers `OutOfRange` or `ResourceExhausted`)
//! is asked again with half the limit, down to one key per page (a single
//! key larger than the limit cannot be loaded, and is an error). If `R` is
//! compacted before the last page, the range fails and the caller starts a
//! new load at a new revision.

use etcd_client::{Client, GetOptions, KeyValue};

use crate::Error;

/// The first key after every key that starts with `prefix`: the end of
/// etcd's range for the prefix (`"\0"` for the empty prefix: every key).
pub(crate) fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("not empty: `last` is its last byte") += 1;
            return end;
        }
        end.pop();
    }
    // Only 0xff bytes (or nothing): every key from the prefix on.
    vec![0]
}

/// Loads every key of the prefix at one revision; returns that revision
/// and the keys in key order.
pub(crate) async fn load_prefix(
    client: &mut Client,
    prefix: &[u8],
    page_size: i64,
) -> Result<(i64, Vec<KeyValue>), Error> {
    let end = prefix_range_end(prefix);
    let mut revision = 0;
    let mut from = prefix.to_vec();
    let mut limit = page_size.max(1);
    let mut kvs = Vec::new();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
        if revision != 0 {
            options = options.with_revision(revision);
        }
        let mut response = match client.get(from.clone(), Some(options)).await {
            Ok(response) => response,
            Err(error) if limit > 1 && is_too_large(&error) => {
                limit = (limit / 2).max(1);
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        if revision == 0 {
            revision = response
                .header()
                .ok_or_else(|| Error::Protocol("a range response without a header".into()))?
                .revision();
        }
        let more = response.more();
        let page = response.take_kvs();
        let Some(last) = page.last() else { break };
        from = last.key().to_vec();
        from.push(0); // the next key after the last one received
        kvs.extend(page);
        if !more {
            break;
        }
    }
    Ok((revision, kvs))
}

/// Whether the client refused a response as larger than its message limit.
fn is_too_large(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if matches!(status.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted))
}

#[cfg(test)]
mod tests {
    use super::prefix_range_end;

    #[test]
    fn range_end_of_a_prefix() {
        assert_eq!(prefix_range_end(b"/cfg/"), b"/cfg0");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_range_end(b""), b"\0");
    }
}
