-- oauth_states: authorizations in progress, from GET /api/oauth/{provider}/authorize
-- to its callback, kept in the store so that any API replica can finish one.
--
-- `state_hash` is the sha-256 (hex) of the random state Ferry sends to the
-- provider: the state itself is never stored. The pkce verifier is sealed
-- like connector secrets (aes-256-gcm under master key `verifier_key_id`,
-- with 'oauth_state:' || state_hash as associated data). A row is taken by
-- one `delete … returning`, so each state is used at most once; expired
-- rows are deleted by later authorizations. Timestamps are rfc 3339 text in
-- utc, as in 0001.
create table oauth_states (
    state_hash          text not null,
    provider            text not null,
    org_id              text not null,
    user_id             text not null,
    display_name        text not null,
    -- the caller's own csrf state, handed back on every redirect
    caller_state        text not null,
    -- the public connector config the caller sent (a json object)
    config              text not null,
    -- the redirect uri sent to the provider, repeated in the code exchange
    redirect_uri        text not null,
    verifier_key_id     text not null,
    verifier_nonce      blob not null,
    verifier_ciphertext blob not null,
    created_at          text not null,
    expires_at          text not null,

    constraint oauth_states_pkey primary key (state_hash),
    constraint oauth_states_config_is_object check (json_type(config) = 'object'),
    constraint oauth_states_expiry_after_creation check (expires_at > created_at)
) strict;

-- purging expired authorizations
create index oauth_states_expires_at_idx on oauth_states (expires_at);
