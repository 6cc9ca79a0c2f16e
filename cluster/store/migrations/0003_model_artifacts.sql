-- Model artifacts live in the store every node already reaches, so every Serve replica on
-- any machine loads the same bytes. model_registry.artifact_uri points here
-- ('postgresql:model_artifacts/<version>').

CREATE TABLE model_artifacts (
    version text PRIMARY KEY REFERENCES model_registry (version) ON DELETE CASCADE,
    format  text NOT NULL,                 -- e.g. xgboost-ubj
    sha256  text NOT NULL,
    content bytea NOT NULL
);
