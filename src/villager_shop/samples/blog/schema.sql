-- The blog as it is before the plan: authors and tags are free text, typed by hand.
CREATE TABLE posts (
    id           bigserial PRIMARY KEY,
    title        text NOT NULL,
    body         text,
    author_name  text,
    tag          text,
    published_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX posts_published_at_idx ON posts (published_at);

CREATE TABLE comments (
    id          bigserial PRIMARY KEY,
    post_id     bigint NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    author_name text,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX comments_post_id_idx ON comments (post_id);
