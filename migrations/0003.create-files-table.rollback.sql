-- Drops the files table. DATA IS LOST: every uploaded file and its extracted text is deleted; extract_text
-- nodes that name a file will fail their step until it is uploaded again.

DROP TABLE files;
