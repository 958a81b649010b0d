-- open_upload: the id of the multipart upload an attempt opened for the
-- step's result object and has not completed yet. It is recorded before the
-- first part is sent, so that when the attempt dies mid-upload the next one
-- can abort the orphaned upload (S3 keeps the parts of an open upload, and
-- bills for them, until it is completed or aborted). Cleared when the step
-- completes or the upload was aborted.
alter table execution_steps add column open_upload text;
