-- Fewer index entries per notification write. A grouped notification is updated in
-- place on every occurrence and its `pos` moves, so no such update is HOT: each one
-- adds an entry to every index of the table. Two of the five were redundant:
-- * pos's UNIQUE constraint (its sequence already makes it unique; listings and
--   cursors go through notifications_user_pos_idx);
-- * notifications_unread_idx: notifications_group_idx has the same predicate and
--   user_id first, so unread counts use it instead.
ALTER TABLE notifications DROP CONSTRAINT notifications_pos_key;
DROP INDEX notifications_unread_idx;
