-- depthbook_reader: read-only access for the API and Grafana. It cannot log in; a login role
-- (e.g. `CREATE ROLE depthbook_api LOGIN PASSWORD '...' IN ROLE depthbook_reader`) inherits it.
-- Roles are cluster-wide while migrations run per database, so creation tolerates a role that
-- exists already (another database, or a concurrent migrator).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'depthbook_reader') THEN
        CREATE ROLE depthbook_reader NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
DECLARE
    s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['public', 'rollup'] LOOP
        IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = s) THEN
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO depthbook_reader', s);
            EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO depthbook_reader', s);
            EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %I TO depthbook_reader', s);
            -- Relations later migrations create (as the same migrating role) are readable too.
            EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO depthbook_reader', s);
        END IF;
    END LOOP;
END
$$;

-- Readers must not be able to change anything, even through a function that writes.
REVOKE EXECUTE ON FUNCTION apply_storage_policies(), run_retention(), maintain() FROM PUBLIC, depthbook_reader;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
