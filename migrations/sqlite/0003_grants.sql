-- grants: a user's explicit role on a project or a connector.
--
-- No foreign key: a grant names either kind of resource. The store deletes
-- a project's grants in the same transaction as the project.
create table grants (
    resource_type text not null,
    resource_uuid text not null,
    user_id       text not null,
    role          text not null,
    granted_by    text not null,
    granted_at    text not null,

    constraint grants_pkey primary key (resource_type, resource_uuid, user_id),
    constraint grants_resource_type_check check (resource_type in ('project', 'connector')),
    constraint grants_role_check check (role in ('owner', 'editor', 'viewer'))
) strict;

-- what a member may see: their grants of one resource type
create index grants_user_idx on grants (user_id, resource_type, resource_uuid);
