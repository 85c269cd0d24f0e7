-- Dead-lettered deliveries only: readiness and the outbox gauges count them every few
-- seconds, which without this index read every delivery row kept (30 days by default).
CREATE INDEX deliveries_dead ON deliveries (id) WHERE state = 'dead';
