-- One resource by name (the parent is often not given), without scanning every resource.
CREATE INDEX resources_name ON resources (kind, project, name);

-- Pending deliveries only: in id order, so a claim walks them oldest first and stops at its
-- LIMIT instead of visiting and sorting every due row; by due time, for the next wake-up.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_pending ON deliveries (id) WHERE state = 'pending';
CREATE INDEX deliveries_pending_due ON deliveries (next_attempt_ms) WHERE state = 'pending';
