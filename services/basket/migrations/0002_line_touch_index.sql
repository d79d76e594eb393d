-- Baskets expire `ttl_days` after their last add or change of quantity: the sweep looks
-- for users whose newest line change is older than that.
CREATE INDEX basket_lines_by_user_and_change ON basket_lines (user_id, updated_at_ms);
