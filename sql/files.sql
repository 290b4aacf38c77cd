-- Files: uploaded PDFs, stored in PostgreSQL with the text extracted from them at upload.

-- name: create_file :one
-- Stores an uploaded PDF with its extracted text; returns its metadata as the API's JSON body.
INSERT INTO files (filename, content_type, size_bytes, sha256, page_count, data, text_content)
VALUES (%(filename)s, %(content_type)s, %(size_bytes)s, %(sha256)s, %(page_count)s, %(data)s, %(text_content)s)
RETURNING id,
          json_build_object('file_id', id, 'filename', filename, 'size', size_bytes)::text AS body;

-- name: get_file_json :one
-- Returns one file's metadata (never its bytes) as the API's JSON body.
SELECT json_build_object('file_id', id, 'filename', filename, 'content_type', content_type, 'size', size_bytes,
                         'sha256', sha256, 'page_count', page_count, 'created_at', created_at)::text AS body
FROM files
WHERE id = %(file_id)s;

-- name: get_file_text :one
-- Returns the text extracted from one file at upload; no row when the file does not exist (or was deleted).
SELECT text_content
FROM files
WHERE id = %(file_id)s;

-- name: file_exists :one
-- Returns one row when the file exists.
SELECT 1 AS found
FROM files
WHERE id = %(file_id)s;

-- name: delete_file :one
-- Deletes one file; no row when it did not exist.
DELETE FROM files
WHERE id = %(file_id)s
RETURNING id;

-- name: list_recent_files :many
-- Lists the newest uploaded files' metadata (never their bytes or text), for the console's file pickers.
SELECT id, filename, size_bytes, page_count, created_at
FROM files
ORDER BY created_at DESC, id
LIMIT %(row_limit)s;
