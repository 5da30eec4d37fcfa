-- A Coder-like schema (modelled on coderd/database/dump.sql, much reduced) with deterministic seed
-- data. Run as the role `coder` inside the database `coder`; ids are md5-derived so every run is equal.

CREATE TYPE login_type AS ENUM ('password', 'github', 'oidc', 'token', 'none');
CREATE TYPE user_status AS ENUM ('active', 'suspended', 'dormant');
CREATE TYPE workspace_transition AS ENUM ('start', 'stop', 'delete');
CREATE TYPE build_reason AS ENUM ('initiator', 'autostart', 'autostop');
CREATE TYPE provisioner_job_type AS ENUM ('template_version_import', 'workspace_build', 'template_version_dry_run');
CREATE TYPE workspace_agent_lifecycle_state AS ENUM
    ('created', 'starting', 'start_timeout', 'start_error', 'ready', 'shutting_down', 'off');
CREATE TYPE log_level AS ENUM ('trace', 'debug', 'info', 'warn', 'error');
CREATE TYPE audit_action AS ENUM ('create', 'write', 'delete', 'start', 'stop', 'login', 'logout');
CREATE TYPE resource_type AS ENUM
    ('organization', 'template', 'template_version', 'user', 'workspace', 'workspace_build', 'api_key', 'license');

CREATE TABLE schema_migrations (
    version bigint NOT NULL PRIMARY KEY,
    dirty boolean NOT NULL
);

CREATE TABLE organizations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE,
    display_name text NOT NULL,
    description text NOT NULL DEFAULT '',
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL,
    username text NOT NULL,
    name text NOT NULL DEFAULT '',
    hashed_password bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    status user_status NOT NULL DEFAULT 'active',
    rbac_roles text[] NOT NULL DEFAULT '{}',
    login_type login_type NOT NULL DEFAULT 'password',
    avatar_url text NOT NULL DEFAULT '',
    deleted boolean NOT NULL DEFAULT false,
    last_seen_at timestamptz NOT NULL DEFAULT '0001-01-01 00:00:00+00'
);
CREATE UNIQUE INDEX idx_users_email ON users (email) WHERE deleted = false;
CREATE UNIQUE INDEX idx_users_username ON users (username) WHERE deleted = false;

CREATE TABLE organization_members (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    roles text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (organization_id, user_id)
);

CREATE TABLE templates (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    deleted boolean NOT NULL DEFAULT false,
    name varchar(64) NOT NULL,
    provisioner text NOT NULL DEFAULT 'terraform',
    active_version_id uuid NOT NULL,
    description varchar(128) NOT NULL DEFAULT '',
    default_ttl bigint NOT NULL DEFAULT 604800000000000,
    created_by uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    icon varchar(256) NOT NULL DEFAULT '',
    display_name varchar(64) NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX templates_organization_id_name_idx ON templates (organization_id, lower(name))
    WHERE deleted = false;

CREATE TABLE provisioner_jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    canceled_at timestamptz,
    completed_at timestamptz,
    error text,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    initiator_id uuid NOT NULL,
    provisioner text NOT NULL DEFAULT 'terraform',
    storage_method text NOT NULL DEFAULT 'file',
    type provisioner_job_type NOT NULL,
    input jsonb NOT NULL,
    worker_id uuid,
    file_id uuid NOT NULL,
    tags jsonb NOT NULL DEFAULT '{"scope": "organization"}'
);

CREATE TABLE template_versions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    template_id uuid REFERENCES templates (id) ON DELETE CASCADE,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    name varchar(64) NOT NULL,
    readme varchar(1048576) NOT NULL DEFAULT '',
    job_id uuid NOT NULL REFERENCES provisioner_jobs (id),
    created_by uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    message varchar(1048576) NOT NULL DEFAULT ''
);

CREATE TABLE workspaces (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    owner_id uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    template_id uuid NOT NULL REFERENCES templates (id) ON DELETE RESTRICT,
    deleted boolean NOT NULL DEFAULT false,
    name varchar(64) NOT NULL,
    autostart_schedule text,
    ttl bigint,
    last_used_at timestamptz NOT NULL DEFAULT '0001-01-01 00:00:00+00',
    dormant_at timestamptz,
    automatic_updates text NOT NULL DEFAULT 'never'
);
CREATE UNIQUE INDEX workspaces_owner_id_lower_idx ON workspaces (owner_id, lower(name)) WHERE deleted = false;

CREATE TABLE workspace_builds (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    template_version_id uuid NOT NULL REFERENCES template_versions (id) ON DELETE CASCADE,
    build_number integer NOT NULL,
    transition workspace_transition NOT NULL,
    initiator_id uuid NOT NULL,
    provisioner_state bytea,
    job_id uuid NOT NULL UNIQUE REFERENCES provisioner_jobs (id) ON DELETE CASCADE,
    deadline timestamptz NOT NULL DEFAULT '0001-01-01 00:00:00+00',
    reason build_reason NOT NULL DEFAULT 'initiator',
    daily_cost integer NOT NULL DEFAULT 0,
    UNIQUE (workspace_id, build_number)
);

CREATE TABLE workspace_resources (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    job_id uuid NOT NULL REFERENCES provisioner_jobs (id) ON DELETE CASCADE,
    transition workspace_transition NOT NULL,
    type varchar(192) NOT NULL,
    name varchar(64) NOT NULL
);

CREATE TABLE workspace_agents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    name varchar(64) NOT NULL,
    first_connected_at timestamptz,
    last_connected_at timestamptz,
    disconnected_at timestamptz,
    resource_id uuid NOT NULL REFERENCES workspace_resources (id) ON DELETE CASCADE,
    auth_token uuid NOT NULL,
    architecture varchar(64) NOT NULL,
    environment_variables jsonb,
    operating_system varchar(64) NOT NULL,
    instance_metadata jsonb,
    directory varchar(4096) NOT NULL DEFAULT '',
    version text NOT NULL DEFAULT '',
    lifecycle_state workspace_agent_lifecycle_state NOT NULL DEFAULT 'created',
    logs_length integer NOT NULL DEFAULT 0,
    logs_overflowed boolean NOT NULL DEFAULT false
);
CREATE INDEX workspace_agents_resource_id_idx ON workspace_agents (resource_id);

CREATE TABLE workspace_agent_logs (
    id bigserial PRIMARY KEY,
    agent_id uuid NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    output varchar(1024) NOT NULL,
    level log_level NOT NULL DEFAULT 'info',
    log_source_id uuid NOT NULL
);
CREATE INDEX workspace_agent_logs_agent_id_id_idx ON workspace_agent_logs (agent_id, id);

CREATE TABLE api_keys (
    id text PRIMARY KEY,
    hashed_secret bytea NOT NULL,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_used timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    login_type login_type NOT NULL,
    lifetime_seconds bigint NOT NULL DEFAULT 86400,
    ip_address inet NOT NULL DEFAULT '0.0.0.0',
    scope text NOT NULL DEFAULT 'all',
    token_name text NOT NULL DEFAULT ''
);
CREATE INDEX idx_api_keys_user ON api_keys (user_id);

CREATE TABLE audit_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "time" timestamptz NOT NULL,
    user_id uuid NOT NULL,
    organization_id uuid NOT NULL,
    ip inet,
    user_agent varchar(256),
    resource_type resource_type NOT NULL,
    resource_id uuid NOT NULL,
    resource_target text NOT NULL,
    action audit_action NOT NULL,
    diff jsonb NOT NULL,
    status_code integer NOT NULL,
    additional_fields jsonb NOT NULL,
    request_id uuid NOT NULL,
    resource_icon text NOT NULL DEFAULT ''
);
CREATE INDEX idx_audit_logs_time_desc ON audit_logs ("time" DESC);

CREATE TABLE licenses (
    id serial PRIMARY KEY,
    uploaded_at timestamptz NOT NULL,
    jwt text NOT NULL,
    exp timestamptz NOT NULL,
    uuid uuid NOT NULL
);

-- Seed data -------------------------------------------------------------------------------------

CREATE FUNCTION pg_temp.lab_id(kind text, n integer) RETURNS uuid
    LANGUAGE sql IMMUTABLE AS $$ SELECT md5(kind || '/' || n)::uuid $$;

INSERT INTO schema_migrations (version, dirty) VALUES (330, false);

INSERT INTO organizations (id, name, display_name, description, is_default, created_at, updated_at)
VALUES (pg_temp.lab_id('org', 1), 'coder', 'Coder', 'Builtin default organization.', true,
        '2025-09-01 10:00:00+00', '2025-09-01 10:00:00+00');

INSERT INTO users (id, email, username, name, hashed_password, created_at, updated_at, status, rbac_roles,
                   login_type, last_seen_at)
SELECT pg_temp.lab_id('user', i),
       format('user%s@xuperson.org', i),
       CASE WHEN i = 1 THEN 'admin' ELSE format('user%s', i) END,
       format('Lab User %s', i),
       sha256(convert_to('password-' || i, 'UTF8')),
       timestamptz '2025-09-01 10:00:00+00' + make_interval(hours => i),
       timestamptz '2025-09-01 10:00:00+00' + make_interval(hours => i),
       (CASE WHEN i % 7 = 0 THEN 'suspended' ELSE 'active' END)::user_status,
       CASE WHEN i = 1 THEN ARRAY['owner'] ELSE ARRAY[]::text[] END,
       (CASE WHEN i % 3 = 0 THEN 'oidc' ELSE 'password' END)::login_type,
       timestamptz '2025-11-20 08:00:00+00' + make_interval(mins => i * 17)
FROM generate_series(1, 12) AS i;

INSERT INTO organization_members (user_id, organization_id, created_at, updated_at, roles)
SELECT pg_temp.lab_id('user', i), pg_temp.lab_id('org', 1),
       timestamptz '2025-09-01 10:00:00+00' + make_interval(hours => i),
       timestamptz '2025-09-01 10:00:00+00' + make_interval(hours => i),
       CASE WHEN i = 1 THEN ARRAY['organization-admin'] ELSE ARRAY[]::text[] END
FROM generate_series(1, 12) AS i;

-- Jobs 1-6 import template versions; jobs 101-160 run workspace builds.
INSERT INTO provisioner_jobs (id, created_at, updated_at, started_at, completed_at, error, organization_id,
                              initiator_id, type, input, worker_id, file_id)
SELECT pg_temp.lab_id('job', j),
       timestamptz '2025-09-02 09:00:00+00' + make_interval(mins => j),
       timestamptz '2025-09-02 09:00:00+00' + make_interval(mins => j + 2),
       timestamptz '2025-09-02 09:00:00+00' + make_interval(mins => j, secs => 5),
       timestamptz '2025-09-02 09:00:00+00' + make_interval(mins => j + 2),
       CASE WHEN j = 157 THEN 'terraform apply: exit status 1' END,
       pg_temp.lab_id('org', 1),
       pg_temp.lab_id('user', 1 + j % 12),
       (CASE WHEN j <= 6 THEN 'template_version_import' ELSE 'workspace_build' END)::provisioner_job_type,
       CASE WHEN j <= 6 THEN jsonb_build_object('template_version_id', pg_temp.lab_id('tv', j))
            ELSE jsonb_build_object('workspace_build_id', pg_temp.lab_id('build', j - 100)) END,
       pg_temp.lab_id('provisionerd', 1 + j % 2),
       pg_temp.lab_id('file', CASE WHEN j <= 6 THEN j ELSE 1 + (j - 101) / 20 END)
FROM (SELECT generate_series(1, 6) UNION ALL SELECT generate_series(101, 160)) AS jobs (j);

INSERT INTO templates (id, created_at, updated_at, organization_id, name, active_version_id, description,
                       created_by, icon, display_name)
SELECT pg_temp.lab_id('template', t),
       timestamptz '2025-09-02 09:00:00+00' + make_interval(mins => t),
       timestamptz '2025-09-02 09:00:00+00' + make_interval(mins => t),
       pg_temp.lab_id('org', 1),
       (ARRAY['kubernetes-devcontainer', 'docker-python', 'kubernetes-go'])[t],
       pg_temp.lab_id('tv', t * 2),
       (ARRAY['Dev containers on Kubernetes', 'Python in Docker', 'Go on Kubernetes'])[t],
       pg_temp.lab_id('user', 1),
       '/icon/k8s.png',
       (ARRAY['Kubernetes (Devcontainer)', 'Docker Python', 'Kubernetes Go'])[t]
FROM generate_series(1, 3) AS t;

INSERT INTO template_versions (id, template_id, organization_id, created_at, updated_at, name, readme, job_id,
                               created_by, message)
SELECT pg_temp.lab_id('tv', v),
       pg_temp.lab_id('template', (v + 1) / 2),
       pg_temp.lab_id('org', 1),
       timestamptz '2025-09-02 09:00:00+00' + make_interval(mins => v),
       timestamptz '2025-09-02 09:00:00+00' + make_interval(mins => v),
       format('v1.%s.0', v),
       format(E'# Template %s\n\nProvisions a workspace with code-server and the Coder agent.\n', (v + 1) / 2),
       pg_temp.lab_id('job', v),
       pg_temp.lab_id('user', 1),
       CASE WHEN v % 2 = 0 THEN 'bump image' ELSE 'initial version' END
FROM generate_series(1, 6) AS v;

INSERT INTO workspaces (id, created_at, updated_at, owner_id, organization_id, template_id, deleted, name,
                        autostart_schedule, ttl, last_used_at)
SELECT pg_temp.lab_id('workspace', w),
       timestamptz '2025-09-03 09:00:00+00' + make_interval(hours => w),
       timestamptz '2025-11-25 09:00:00+00' + make_interval(mins => w),
       pg_temp.lab_id('user', 1 + w % 12),
       pg_temp.lab_id('org', 1),
       pg_temp.lab_id('template', 1 + w % 3),
       w = 20,
       format('ws-%s', w),
       CASE WHEN w % 4 = 0 THEN 'CRON_TZ=Europe/Berlin 30 8 * * 1-5' END,
       CASE WHEN w % 2 = 0 THEN 28800000000000 END,
       timestamptz '2025-11-25 09:00:00+00' + make_interval(mins => w * 3)
FROM generate_series(1, 20) AS w;

-- Three builds per workspace: start, stop, start (the last one of workspace 20 deletes it).
INSERT INTO workspace_builds (id, created_at, updated_at, workspace_id, template_version_id, build_number,
                              transition, initiator_id, provisioner_state, job_id, deadline, reason, daily_cost)
SELECT pg_temp.lab_id('build', b),
       timestamptz '2025-09-03 09:00:00+00' + make_interval(hours => w, mins => n * 45),
       timestamptz '2025-09-03 09:00:00+00' + make_interval(hours => w, mins => n * 45 + 2),
       pg_temp.lab_id('workspace', w),
       pg_temp.lab_id('tv', (1 + w % 3) * 2),
       n,
       (CASE WHEN n = 2 THEN 'stop' WHEN w = 20 AND n = 3 THEN 'delete' ELSE 'start' END)::workspace_transition,
       pg_temp.lab_id('user', 1 + w % 12),
       convert_to(format('{"version":4,"terraform_version":"1.9.8","serial":%s,"resources":[]}', b), 'UTF8'),
       pg_temp.lab_id('job', 100 + b),
       timestamptz '2025-09-03 17:00:00+00' + make_interval(hours => w),
       (CASE WHEN n = 2 AND w % 2 = 0 THEN 'autostop' ELSE 'initiator' END)::build_reason,
       0
FROM generate_series(1, 20) AS w, generate_series(1, 3) AS n, LATERAL (SELECT (w - 1) * 3 + n AS b) AS x;

INSERT INTO workspace_resources (id, created_at, job_id, transition, type, name)
SELECT pg_temp.lab_id('resource', w),
       timestamptz '2025-09-03 09:00:00+00' + make_interval(hours => w, mins => 90),
       pg_temp.lab_id('job', 100 + (w - 1) * 3 + 3),
       'start',
       'kubernetes_deployment',
       'main'
FROM generate_series(1, 20) AS w;

INSERT INTO workspace_agents (id, created_at, updated_at, name, first_connected_at, last_connected_at,
                              resource_id, auth_token, architecture, environment_variables, operating_system,
                              instance_metadata, directory, version, lifecycle_state, logs_length)
SELECT pg_temp.lab_id('agent', w),
       timestamptz '2025-09-03 09:00:00+00' + make_interval(hours => w, mins => 91),
       timestamptz '2025-11-25 09:00:00+00' + make_interval(mins => w),
       'main',
       timestamptz '2025-09-03 09:00:00+00' + make_interval(hours => w, mins => 92),
       timestamptz '2025-11-25 09:00:00+00' + make_interval(mins => w),
       pg_temp.lab_id('resource', w),
       pg_temp.lab_id('token', w),
       CASE WHEN w % 5 = 0 THEN 'arm64' ELSE 'amd64' END,
       jsonb_build_object('GIT_AUTHOR_NAME', format('Lab User %s', 1 + w % 12)),
       'linux',
       jsonb_build_object('pod', format('coder-ws-%s-0', w)),
       '/home/coder',
       'v2.25.0',
       (CASE WHEN w % 6 = 0 THEN 'off' ELSE 'ready' END)::workspace_agent_lifecycle_state,
       10
FROM generate_series(1, 20) AS w;

INSERT INTO workspace_agent_logs (agent_id, created_at, output, level, log_source_id)
SELECT pg_temp.lab_id('agent', w),
       timestamptz '2025-09-03 09:00:00+00' + make_interval(hours => w, mins => 92, secs => l),
       (ARRAY['Starting the Coder agent', 'Cloning https://github.com/coder/coder.git',
              'Installing code-server 4.96.4', 'code-server listening on 127.0.0.1:13337',
              'Running startup script', 'apt-get update: 42 packages can be upgraded',
              'Warning: dotfiles repository not set', 'Connected to DERP region 999 (coder)',
              'Startup script completed', 'Agent is ready'])[l],
       (CASE WHEN l = 7 THEN 'warn' ELSE 'info' END)::log_level,
       pg_temp.lab_id('log-source', 1)
FROM generate_series(1, 20) AS w, generate_series(1, 10) AS l
ORDER BY w, l;

INSERT INTO api_keys (id, hashed_secret, user_id, last_used, expires_at, created_at, updated_at, login_type,
                      lifetime_seconds, ip_address, scope, token_name)
SELECT substr(md5('api-key/' || k), 1, 10),
       sha256(convert_to('secret-' || k, 'UTF8')),
       pg_temp.lab_id('user', 1 + k % 12),
       timestamptz '2025-11-25 09:00:00+00' + make_interval(mins => k),
       timestamptz '2025-12-25 09:00:00+00' + make_interval(mins => k),
       timestamptz '2025-11-01 09:00:00+00' + make_interval(mins => k),
       timestamptz '2025-11-01 09:00:00+00' + make_interval(mins => k),
       (CASE WHEN k % 4 = 0 THEN 'token' ELSE 'password' END)::login_type,
       CASE WHEN k % 4 = 0 THEN 2592000 ELSE 86400 END,
       format('10.42.0.%s', k)::inet,
       'all',
       CASE WHEN k % 4 = 0 THEN format('ci-token-%s', k) ELSE '' END
FROM generate_series(1, 24) AS k;

INSERT INTO audit_logs (id, "time", user_id, organization_id, ip, user_agent, resource_type, resource_id,
                        resource_target, action, diff, status_code, additional_fields, request_id)
SELECT pg_temp.lab_id('audit', a),
       timestamptz '2025-11-01 00:00:00+00' + make_interval(mins => a * 37),
       pg_temp.lab_id('user', 1 + a % 12),
       pg_temp.lab_id('org', 1),
       format('10.42.1.%s', a % 250)::inet,
       'Mozilla/5.0 (X11; Linux x86_64) coder/v2.25.0',
       (ARRAY['workspace', 'workspace_build', 'user', 'template', 'api_key'])[1 + a % 5]::resource_type,
       pg_temp.lab_id('workspace', 1 + a % 20),
       format('ws-%s', 1 + a % 20),
       (ARRAY['start', 'stop', 'write', 'login', 'create'])[1 + a % 5]::audit_action,
       jsonb_build_object('ttl', jsonb_build_object('old', 0, 'new', a * 60, 'secret', false)),
       CASE WHEN a % 17 = 0 THEN 403 ELSE 200 END,
       '{}'::jsonb,
       pg_temp.lab_id('request', a)
FROM generate_series(1, 100) AS a;
