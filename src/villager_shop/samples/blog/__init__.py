"""The blog sample: posts and comments name their author in free text, posts their tag
(plans/blog.toml moves them to authors and tags)."""
