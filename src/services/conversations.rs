//! Listing conversations a caller may see: the store's pages filtered by the bots the
//! caller sees, page after page until one is full, with the cursor of the next.

use crate::domain::{BotId, Conversation, ConversationState, Rating};
use crate::ports::ConversationStore;

/// Which conversations to list: one bot's or one user's (or both), after a cursor, that
/// pass `filter`.
pub struct Listing<'a> {
    pub bot: Option<&'a BotId>,
    pub user: Option<&'a str>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub limit: usize,
    pub filter: Filter,
}

/// What a listed conversation must be; every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub state: Option<ConversationState>,
    /// At least one answer rated so.
    pub rating: Option<Rating>,
    /// Started at or after `since` and before `until` (unix seconds).
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// Text some message contains, ignoring case.
    pub text: Option<String>,
}

impl Filter {
    fn matches(
        &self,
        store: &dyn ConversationStore,
        c: &Conversation,
    ) -> crate::ports::Result<bool> {
        let rated = match self.rating {
            Some(Rating::Up) => c.ratings.up > 0,
            Some(Rating::Down) => c.ratings.down > 0,
            None => true,
        };
        let cheap = self.state.is_none_or(|s| s == c.state)
            && rated
            && self.since.is_none_or(|t| c.created >= t)
            && self.until.is_none_or(|t| c.created < t);
        let Some(text) = self.text.as_deref().filter(|_| cheap) else {
            return Ok(cheap);
        };
        let needle = text.to_lowercase();
        Ok(store
            .messages(&c.id)?
            .iter()
            .any(|m| m.content.to_lowercase().contains(&needle)))
    }
}

/// Conversations one request reads at most before it answers with what it found: a
/// selective filter over a large store returns short pages with a cursor instead of
/// reading everything at once.
pub const MAX_SCANNED: usize = 2000;

/// Up to `limit` conversations of `visible` bots matching the listing, in id order, and
/// the cursor of the next page (`None` when there is none). Stored pages are read one
/// after another while the ones a caller may not see or the filter refuses are left out,
/// so a full page is returned whenever there are that many within `MAX_SCANNED`; past
/// that, a shorter page and the cursor of the last one read.
pub fn visible_page(
    store: &dyn ConversationStore,
    listing: Listing<'_>,
    visible: &[BotId],
) -> crate::ports::Result<(Vec<Conversation>, Option<String>)> {
    let limit = listing.limit.max(1);
    let mut out = Vec::new();
    let mut cursor = listing.cursor;
    let mut scanned = 0;
    loop {
        let batch =
            store.list_conversations(listing.bot, listing.user, cursor.as_deref(), limit)?;
        let exhausted = batch.len() < limit;
        scanned += batch.len();
        cursor = batch.last().map(|c| c.id.clone()).or(cursor);
        for c in batch {
            if visible.contains(&c.bot_id) && listing.filter.matches(store, &c)? {
                out.push(c);
            }
        }
        if exhausted || out.len() >= limit {
            out.truncate(limit);
            let next = if exhausted && out.len() < limit {
                None
            } else {
                out.last().map(|c| c.id.clone())
            };
            return Ok((out, next));
        }
        if scanned >= MAX_SCANNED {
            return Ok((out, cursor));
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
                filter: Filter::default(),
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
                filter: Filter::default(),
            },
            &[],
        )
        .unwrap();
        assert!(list.is_empty() && next.is_none());
    }

    #[test]
    fn filters_keep_the_conversations_matching_every_condition() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let say = |text: &str| crate::domain::Message {
            id: crate::ids::message(),
            content: text.into(),
            ..Default::default()
        };
        let mut handed = conversation("c1", "docs");
        handed.hand_off("visitor_request", 5);
        handed.created = 100;
        store
            .append_messages(&handed, &[say("Where is my REFUND?")])
            .unwrap();
        let mut rated = conversation("c2", "docs");
        rated.created = 200;
        rated.ratings.down = 1;
        store.append_messages(&rated, &[say("hours?")]).unwrap();
        let docs = [BotId::parse("docs").unwrap()];
        let ids = |filter: Filter| {
            let listing = Listing {
                bot: None,
                user: None,
                cursor: None,
                limit: 10,
                filter,
            };
            let (list, _) = visible_page(&store, listing, &docs).unwrap();
            list.into_iter().map(|c| c.id).collect::<Vec<_>>()
        };
        assert_eq!(ids(Filter::default()), ["c1", "c2"]);
        let state = |s| Filter {
            state: Some(s),
            ..Filter::default()
        };
        assert_eq!(ids(state(ConversationState::HandedOff)), ["c1"]);
        assert_eq!(ids(state(ConversationState::Open)), ["c2"]);
        assert!(ids(state(ConversationState::Closed)).is_empty());
        let rating = |r| Filter {
            rating: Some(r),
            ..Filter::default()
        };
        assert_eq!(ids(rating(Rating::Down)), ["c2"]);
        assert!(ids(rating(Rating::Up)).is_empty());
        let window = Filter {
            since: Some(150),
            until: Some(201),
            ..Filter::default()
        };
        assert_eq!(ids(window), ["c2"]);
        let text = |t: &str| Filter {
            text: Some(t.into()),
            ..Filter::default()
        };
        assert_eq!(ids(text("refund")), ["c1"]);
        assert!(ids(text("shipping")).is_empty());
    }

    #[test]
    fn a_selective_filter_answers_after_max_scanned_with_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let total = MAX_SCANNED + 5;
        for i in 0..total {
            let mut c = conversation(&format!("c{i:05}"), "docs");
            if i == total - 1 {
                c.hand_off("api", 1);
            }
            store.append_messages(&c, &[]).unwrap();
        }
        let docs = [BotId::parse("docs").unwrap()];
        let page = |cursor: Option<String>| {
            let listing = Listing {
                bot: None,
                user: None,
                cursor,
                limit: 50,
                filter: Filter {
                    state: Some(ConversationState::HandedOff),
                    ..Filter::default()
                },
            };
            visible_page(&store, listing, &docs).unwrap()
        };
        let (first, next) = page(None);
        assert!(first.is_empty());
        assert_eq!(
            next.as_deref(),
            Some(format!("c{:05}", MAX_SCANNED - 1).as_str())
        );
        let (second, next) = page(next);
        let ids: Vec<String> = second.into_iter().map(|c| c.id).collect();
        assert_eq!(ids, [format!("c{:05}", total - 1)]);
        assert!(next.is_none());
    }
}
