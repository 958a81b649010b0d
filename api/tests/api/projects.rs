//! Projects API: every seed field, status code and error body.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, User, assert_error, spawn_app, spawn_app_on};

async fn project_lifecycle_follows_the_seed(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let alice = User::member("user_alice", "org_a");
    let created = app
        .post(
            &alice,
            "/api/projects",
            json!({
                "name": "Q4 Sales Analysis",
                "description": "Quarterly sales performance analysis",
                "connector_uuids": ["conn_01ABCDEF", "conn_02GHIJKL"],
                "metadata": {"department": "analytics", "tags": ["sales", "quarterly"]}
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let body = &created.body;
    let uuid = body["uuid"].as_str().expect("uuid");
    assert!(uuid.starts_with("proj_"));
    assert_eq!(body["name"], "Q4 Sales Analysis");
    assert_eq!(body["description"], "Quarterly sales performance analysis");
    assert_eq!(body["connector_uuids"], json!(["conn_01ABCDEF", "conn_02GHIJKL"]));
    assert_eq!(body["metadata"]["tags"], json!(["sales", "quarterly"]));
    assert_eq!(body["created_by"], "user_alice");
    assert_eq!(body["status"], "draft");
    assert!(body["last_executed_at"].is_null());
    assert_eq!(body["created_at"], body["updated_at"]);
    assert!(chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().expect("created_at")).is_ok());

    let fetched = app.get(&alice, &format!("/api/projects/{uuid}")).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["name"], "Q4 Sales Analysis");
    assert_eq!(fetched.body["steps"], json!([]));
    assert_eq!(
        fetched.body["permissions"],
        json!({"can_edit": true, "can_delete": true, "can_share": true, "role": "owner"})
    );

    let updated = app
        .put(
            &alice,
            &format!("/api/projects/{uuid}"),
            json!({"name": "Q4 2024 Sales Analysis", "description": null, "status": "active"}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    assert_eq!(updated.body["name"], "Q4 2024 Sales Analysis");
    assert!(updated.body["description"].is_null());
    assert_eq!(updated.body["status"], "active");
    assert_eq!(
        updated.body["metadata"]["department"], "analytics",
        "fields not sent are kept"
    );
    assert_ne!(updated.body["updated_at"], body["updated_at"]);

    let deleted = app
        .delete(&alice, &format!("/api/projects/{uuid}?hard_delete=true"))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.text.is_empty());
    let gone = app.get(&alice, &format!("/api/projects/{uuid}")).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found", None);
    assert_eq!(gone.body["message"], "Project not found");
}

#[tokio::test]
async fn project_lifecycle_follows_the_seed_on_sqlite() {
    project_lifecycle_follows_the_seed(Backend::Sqlite).await;
}

#[tokio::test]
async fn project_lifecycle_follows_the_seed_on_postgres() {
    project_lifecycle_follows_the_seed(Backend::Postgres).await;
}

#[tokio::test]
async fn create_without_a_name_is_400_validation_error_naming_name() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": null}),
    ] {
        let reply = app.post(&alice, "/api/projects", body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some("name"));
        assert_eq!(reply.body["message"], "Project name is required");
    }
}

#[tokio::test]
async fn wrong_types_are_400_naming_the_field() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let reply = app.post(&alice, "/api/projects", json!({"name": 5})).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some("name"));
    let reply = app
        .post(
            &alice,
            "/api/projects",
            json!({"name": "x", "connector_uuids": "conn_1"}),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("connector_uuids"),
    );
    let reply = app
        .post(
            &alice,
            "/api/projects",
            json!({"name": "x", "connector_uuids": ["conn_1", 7]}),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("connector_uuids[1]"),
    );
    let reply = app
        .post(&alice, "/api/projects", json!({"name": "x", "metadata": [1, 2]}))
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("metadata"),
    );
    let uuid = app.create_project(&alice, "p").await;
    let reply = app
        .put(
            &alice,
            &format!("/api/projects/{uuid}"),
            json!({"status": "running"}),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("status"),
    );
    let reply = app
        .put(
            &alice,
            &format!("/api/projects/{uuid}"),
            json!({"status": "draft"}),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("status"),
    );
    let reply = app
        .put(&alice, &format!("/api/projects/{uuid}"), json!({"name": null}))
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some("name"));
}

#[tokio::test]
async fn list_paginates_sorts_filters_and_searches() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let mut uuids = Vec::new();
    for name in ["Delta", "alpha", "Charlie", "bravo", "Echo sales"] {
        uuids.push(app.create_project(&alice, name).await);
    }
    app.put(
        &alice,
        &format!("/api/projects/{}", uuids[1]),
        json!({"description": "Regional SALES numbers"}),
    )
    .await;

    let page = app
        .get(&alice, "/api/projects?limit=2&page=2&sort=created_at&order=asc")
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let names: Vec<_> = page.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, [json!("Charlie"), json!("bravo")]);
    assert_eq!(
        page.body["pagination"],
        json!({"page": 2, "limit": 2, "total": 5, "total_pages": 3, "has_next": true, "has_prev": true})
    );
    let item = &page.body["data"][0];
    assert_eq!(item["step_count"], 0);
    assert_eq!(item["permissions"]["role"], "owner");

    let default = app.get(&alice, "/api/projects").await;
    let names: Vec<_> = default.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(
        names.first(),
        Some(&json!("Echo sales")),
        "default is created_at desc"
    );
    assert_eq!(default.body["pagination"]["limit"], 20);

    let by_name = app.get(&alice, "/api/projects?sort=name&order=asc").await;
    let names: Vec<_> = by_name.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(
        names,
        [
            json!("Charlie"),
            json!("Delta"),
            json!("Echo sales"),
            json!("alpha"),
            json!("bravo")
        ]
    );

    let updated = app
        .get(&alice, "/api/projects?sort=updated_at&order=desc&limit=1")
        .await;
    assert_eq!(updated.body["data"][0]["name"], "alpha");

    let found = app.get(&alice, "/api/projects?search=sales").await;
    let mut names: Vec<_> = found.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    names.sort_by_key(|n| n.to_string());
    assert_eq!(names, [json!("Echo sales"), json!("alpha")]);

    app.delete(&alice, &format!("/api/projects/{}", uuids[0])).await;
    let visible = app.get(&alice, "/api/projects").await;
    assert_eq!(
        visible.body["pagination"]["total"], 4,
        "archived projects are hidden by default"
    );
    let archived = app.get(&alice, "/api/projects?status=archived").await;
    assert_eq!(archived.body["pagination"]["total"], 1);
    assert_eq!(archived.body["data"][0]["name"], "Delta");
    let drafts = app.get(&alice, "/api/projects?status=draft").await;
    assert_eq!(drafts.body["pagination"]["total"], 4);
}

#[tokio::test]
async fn out_of_range_list_parameters_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("sort=owner", "sort"),
        ("order=up", "order"),
        ("status=running", "status"),
    ] {
        let reply = app.get(&alice, &format!("/api/projects?{query}")).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some(field));
    }
    let ok = app.get(&alice, "/api/projects?limit=100&page=3").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["pagination"]["has_next"], false);
}

#[tokio::test]
async fn other_organizations_and_strangers_get_404_not_403() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let bob = User::member("user_bob", "org_a");
    let mallory = User::admin("user_mallory", "org_b");
    let uuid = app.create_project(&alice, "secret plans").await;
    let path = format!("/api/projects/{uuid}");
    for user in [&bob, &mallory] {
        assert_error(
            &app.get(user, &path).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        );
        assert_error(
            &app.put(user, &path, json!({"name": "x"})).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        );
        assert_error(
            &app.delete(user, &path).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        );
        let listed = app.get(user, "/api/projects").await;
        assert_eq!(listed.body["pagination"]["total"], 0);
    }
    for bad in ["proj_nope", "conn_01J00000000000000000000000", "1"] {
        assert_error(
            &app.get(&alice, &format!("/api/projects/{bad}")).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        );
    }
}

#[tokio::test]
async fn org_admins_act_as_owner_and_viewers_get_403_on_writes() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let admin = User::admin("user_root", "org_a");
    let viewer = User::member("user_vera", "org_a");
    let uuid = app.create_project(&alice, "shared").await;
    let path = format!("/api/projects/{uuid}");

    let seen = app.get(&admin, &path).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.body["permissions"]["role"], "owner");
    let listed = app.get(&admin, "/api/projects").await;
    assert_eq!(listed.body["pagination"]["total"], 1);

    app.store
        .put_grant(&ferry_shared::store::Grant {
            resource: ferry_shared::domain::ResourceKind::Project,
            resource_uuid: uuid.clone(),
            user_id: viewer.id.clone(),
            role: ferry_shared::domain::Role::Viewer,
            granted_by: alice.id.clone(),
            granted_at: ferry_shared::domain::now(),
        })
        .await
        .expect("grant");
    let seen = app.get(&viewer, &path).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(
        seen.body["permissions"],
        json!({"can_edit": false, "can_delete": false, "can_share": false, "role": "viewer"})
    );
    let listed = app.get(&viewer, "/api/projects").await;
    assert_eq!(listed.body["data"][0]["permissions"]["role"], "viewer");
    assert_error(
        &app.put(&viewer, &path, json!({"name": "mine"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    assert_error(
        &app.delete(&viewer, &path).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );

    let renamed = app.put(&admin, &path, json!({"name": "by admin"})).await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(
        app.delete(&admin, &format!("{path}?hard_delete=true"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn soft_delete_archives_and_freezes_the_project() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let uuid = app.create_project(&alice, "old").await;
    let path = format!("/api/projects/{uuid}");
    assert_eq!(app.delete(&alice, &path).await.status, StatusCode::NO_CONTENT);
    let archived = app.get(&alice, &path).await;
    assert_eq!(archived.status, StatusCode::OK);
    assert_eq!(archived.body["status"], "archived");
    assert_error(
        &app.put(&alice, &path, json!({"name": "new"})).await,
        StatusCode::CONFLICT,
        "conflict",
        None,
    );
    let step = app
        .post(
            &alice,
            &format!("{path}/steps"),
            json!({"name": "s", "type": "transform", "config": {"query": "select 1"}}),
        )
        .await;
    assert_error(&step, StatusCode::CONFLICT, "conflict", None);
    assert_eq!(
        app.delete(&alice, &path).await.status,
        StatusCode::NO_CONTENT,
        "deleting again is a no-op"
    );
    assert_error(
        &app.delete(&alice, &format!("{path}?hard_delete=maybe")).await,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("hard_delete"),
    );
    assert_eq!(
        app.delete(&alice, &format!("{path}?hard_delete=true"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.get(&alice, &path).await.status, StatusCode::NOT_FOUND);
}
