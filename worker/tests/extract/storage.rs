//! Object storage, file:// and s3:// alike: a step's object appears at its
//! deterministic path, is reported by URL, and a retry overwrites it.

use ferry_shared::domain::params::ParamValue;
use ferry_shared::objects::ObjectTarget;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use crate::helpers::*;

async fn round_trip_and_retry(target: &ObjectTarget, expected_url_prefix: &str) {
    let db = sqlite_fixture().await;
    let path = target.step_path("exec_store", "step_1");
    assert_eq!(
        target.url_of(&path),
        format!("{expected_url_prefix}/results/exec_store/step_1.parquet")
    );
    assert_eq!(target.path_of(&target.url_of(&path)).as_ref(), Some(&path));
    for n in [3, 5] {
        let bound = query(
            "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < ?) SELECT x FROM s",
            vec![ParamValue::Integer(n)],
        );
        let output = extract(&db.source(), &bound, target, &path)
            .await
            .expect("extract");
        assert_eq!(output.rows, n);
        assert_eq!(output.parts, 0, "a small result is one PUT");
        assert!(output.e_tag.is_some());
        let (batch, _) = read_parquet(target, &path).await;
        assert_eq!(batch.num_rows() as i64, n);
    }
    assert_eq!(
        objects(target).await,
        vec![path],
        "a retry overwrites, never duplicates"
    );
}

#[tokio::test]
async fn a_step_round_trips_through_file_storage_and_a_retry_overwrites() {
    let files = file_target();
    let root = files
        .dir
        .path()
        .join("results-root")
        .canonicalize()
        .expect("root");
    round_trip_and_retry(&files.target, &format!("file://{}", root.display())).await;
    assert_eq!(files.files().len(), 1);
}

#[tokio::test]
async fn a_step_round_trips_through_s3_and_a_retry_overwrites() {
    let s3 = s3_peer().await;
    let target = s3.target("team/data");
    round_trip_and_retry(&target, "s3://ferry-results/team/data").await;
    assert_eq!(s3.open_uploads().await, 0);
}

#[tokio::test]
async fn an_upload_a_dead_attempt_left_open_on_s3_is_aborted_from_its_recorded_id() {
    let s3 = s3_peer().await;
    let target = s3.target("orphans");
    let path = target.step_path("exec_orphan", "step_1");
    let multipart = target.multipart.clone().expect("s3 exposes upload ids");
    let id = multipart.create_multipart(&path).await.expect("create");
    multipart
        .put_part(&path, &id, 0, PutPayload::from(vec![7u8; 5 * 1024 * 1024]))
        .await
        .expect("part");
    assert_eq!(s3.open_uploads().await, 1);

    target
        .discard_unfinished(&path, Some(&id))
        .await
        .expect("discard");
    assert_eq!(s3.open_uploads().await, 0);
    target
        .discard_unfinished(&path, Some(&id))
        .await
        .expect("an upload already gone counts as discarded");
    assert_eq!(objects(&target).await, Vec::<Path>::new());
}

#[tokio::test]
async fn staging_files_a_dead_attempt_left_on_file_storage_are_removed_and_the_object_kept() {
    let files = file_target();
    let target = &files.target;
    let path = target.step_path("exec_orphan", "step_1");
    let neighbour = target.step_path("exec_orphan", "step_10");
    target
        .store
        .put(&neighbour, PutPayload::from_static(b"kept"))
        .await
        .expect("neighbour");
    let mut upload = target.store.put_multipart(&path).await.expect("upload");
    upload
        .put_part(PutPayload::from(vec![7u8; 1024]))
        .await
        .expect("part");
    // The attempt dies: nothing runs the upload's clean-up.
    std::mem::forget(upload);
    let staged = |files: &FileTarget| {
        files
            .files()
            .into_iter()
            .filter(|f| f.to_string_lossy().contains('#'))
            .count()
    };
    assert_eq!(staged(&files), 1, "{:?}", files.files());

    target.discard_unfinished(&path, None).await.expect("discard");
    assert_eq!(staged(&files), 0, "{:?}", files.files());
    assert_eq!(objects(target).await, vec![neighbour]);
}
