-- Creates the files table: uploaded PDFs (bytes, checksum, size, type, name) and the text extracted from them
-- once at upload, which extract_text nodes read.
-- Rollback (0003.create-files-table.rollback.sql) drops it: every uploaded file is lost.

CREATE TABLE files (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    filename     text        NOT NULL,
    -- As the client declared it; advisory only (the bytes are checked to be a PDF).
    content_type text        NOT NULL,
    size_bytes   integer     NOT NULL,
    -- Hex SHA-256 of data, to verify a download or spot a duplicate upload.
    sha256       text        NOT NULL,
    page_count   integer     NOT NULL,
    data         bytea       NOT NULL,
    -- Pages joined by a newline, extracted with pypdf when the file was uploaded.
    text_content text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT files_filename_length CHECK (char_length(filename) BETWEEN 1 AND 255),
    CONSTRAINT files_content_type_length CHECK (char_length(content_type) BETWEEN 1 AND 255),
    CONSTRAINT files_size_matches CHECK (size_bytes = octet_length(data) AND size_bytes > 0),
    CONSTRAINT files_sha256_hex CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    CONSTRAINT files_page_count_positive CHECK (page_count >= 1)
);
