-- What GET /metrics reads at scrape time: the gauges, as the database has them now.

-- name: TenantGauges :many
-- Per tenant: runs running, commands pending (the queue) and agents online. Each count
-- reads a partial index of what is live now (runs pending or running, commands_claimable_idx,
-- agents_online_idx: checked with EXPLAIN), never the history; every tenant is listed, so a
-- gauge that falls to zero says 0 rather than disappearing.
SELECT t.id AS tenant_id,
       coalesce(r.n, 0) AS runs_in_progress,
       coalesce(c.n, 0) AS pending_commands,
       coalesce(a.n, 0) AS agents_online
FROM tenants t
LEFT JOIN (SELECT tenant_id, count(*)::int AS n FROM pipeline_runs
           WHERE status = 'running' GROUP BY tenant_id) r ON r.tenant_id = t.id
LEFT JOIN (SELECT tenant_id, count(*)::int AS n FROM commands
           WHERE status = 'pending' GROUP BY tenant_id) c ON c.tenant_id = t.id
LEFT JOIN (SELECT tenant_id, count(*)::int AS n FROM agents
           WHERE health = 'online' GROUP BY tenant_id) a ON a.tenant_id = t.id
ORDER BY t.id;
