//! Listing conversations a caller may see: the store's pages filtered by the bots the
//! caller sees, page after page until one is full, with the cursor of the next.

use crate::domain::{BotId, Conversation};
use crate::ports::ConversationStore;

/// Which conversations to list: one bot's or one user's (or both), after a cursor.
pub struct Listing<'a> {
    pub bot: Option<&'a BotId>,
    pub user: Option<&'a str>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub limit: usize,
}

/// Up to `limit` conversations of `visible` bots matching the listing, in id order, and
/// the cursor of the next page (`None` when there is none). Stored pages are read one
/// after another while the ones a caller may not see are filtered out, so a full page
/// is returned whenever there are that many.
pub fn visible_page(
    store: &dyn ConversationStore,
    listing: Listing<'_>,
    visible: &[BotId],
) -> crate::ports::Result<(Vec<Conversation>, Option<String>)> {
    let limit = listing.limit.max(1);
    let mut out = Vec::new();
    let mut cursor = listing.cursor;
    loop {
        let batch =
            store.list_conversations(listing.bot, listing.user, cursor.as_deref(), limit)?;
        let exhausted = batch.len() < limit;
        cursor = batch.last().map(|c| c.id.clone()).or(cursor);
        out.extend(batch.into_iter().filter(|c| visible.contains(&c.bot_id)));
        if exhausted || out.len() >= limit {
            out.truncate(limit);
            let next = if exhausted && out.len() < limit {
                None
            } else {
                out.last().map(|c| c.id.clone())
            };
            return Ok((out, next));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn conversation(id: &str, bot: &str) -> Conversation {
        crate::domain::fixtures::conversation(id, bot, None)
    }

    #[test]
    fn pages_fill_across_conversations_the_caller_may_not_see() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // docs, shop, shop, docs, shop, docs: the caller sees docs only.
        for (id, bot) in [
            ("c1", "docs"),
            ("c2", "shop"),
            ("c3", "shop"),
            ("c4", "docs"),
            ("c5", "shop"),
            ("c6", "docs"),
        ] {
            store.append_messages(&conversation(id, bot), &[]).unwrap();
        }
        let visible = [BotId::parse("docs").unwrap()];
        let page = |cursor: Option<&str>| {
            let listing = Listing {
                bot: None,
                user: None,
                cursor: cursor.map(str::to_string),
                limit: 2,
            };
            let (list, next) = visible_page(&store, listing, &visible).unwrap();
            let ids: Vec<String> = list.into_iter().map(|c| c.id).collect();
            (ids, next)
        };
        // The first stored page (c1, c2) holds one visible: the next one fills it.
        assert_eq!(
            page(None),
            (vec!["c1".into(), "c4".into()], Some("c4".into()))
        );
        // Then c5, c6: one left, and the store has no more.
        assert_eq!(page(Some("c4")), (vec!["c6".into()], None));
        // Nothing visible at all: an empty last page.
        let (list, next) = visible_page(
            &store,
            Listing {
                bot: None,
                user: None,
                cursor: None,
                limit: 2,
            },
            &[],
        )
        .unwrap();
        assert!(list.is_empty() && next.is_none());
    }
}
