"""JSON bodies in GitHub's shapes (simple-user, full-repository, release, release-asset, content-file, ...).

Every field the OpenAPI subset marks ``required`` is present, with GitHub's types and nullability, and every URL
is built from the stand-in's external base in the GitHub Enterprise Server layout (API under ``/api/v3``,
uploads under ``/api/uploads``, web pages at the root) because PyGithub refuses absolute URLs that leave its
configured host:port and path prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .state import (
    CONTENTS_INLINE_LIMIT,
    PERMISSION_LEVELS,
    Asset,
    Commit,
    Release,
    Repo,
    User,
    base64_wrapped,
    iso,
    node_id,
)

JSON = dict[str, Any]


@dataclass(frozen=True)
class Urls:
    """URL builders rooted at the stand-in's external base, e.g. ``http://127.0.0.1:PORT``."""

    base: str

    @property
    def api(self) -> str:
        return self.base + "/api/v3"

    @property
    def uploads(self) -> str:
        return self.base + "/api/uploads"

    @property
    def web(self) -> str:
        return self.base

    def repo_api(self, repo: Repo) -> str:
        return f"{self.api}/repos/{repo.owner.login}/{repo.name}"

    def repo_web(self, repo: Repo) -> str:
        return f"{self.web}/{repo.owner.login}/{repo.name}"

    def storage(self, token: str) -> str:
        return f"{self.base}/api/_storage/{token}"


def simple_user(urls: Urls, user: User) -> JSON:
    api = f"{urls.api}/users/{user.login}"
    return {
        "login": user.login,
        "id": user.id,
        "node_id": user.node_id,
        "avatar_url": f"{urls.base}/avatars/u/{user.id}",
        "gravatar_id": "",
        "url": api,
        "html_url": f"{urls.web}/{user.login}",
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
        "type": user.type,
        "user_view_type": "public",
        "site_admin": False,
    }


def private_user(urls: Urls, user: User, public_repos: int, private_repos: int) -> JSON:
    """``GET /user``: the authenticated user's own (private-user) view."""
    return {
        **simple_user(urls, user),
        "user_view_type": "private",  # the discriminator GitHub's schema uses to pick private-user over public-user
        "name": None,
        "company": None,
        "blog": "",
        "location": None,
        "email": None,
        "hireable": None,
        "bio": None,
        "twitter_username": None,
        "notification_email": None,
        "public_repos": public_repos,
        "public_gists": 0,
        "followers": 0,
        "following": 0,
        "created_at": iso(user.created_at),
        "updated_at": iso(user.created_at),
        "private_gists": 0,
        "total_private_repos": private_repos,
        "owned_private_repos": private_repos,
        "disk_usage": 0,
        "collaborators": 0,
        "two_factor_authentication": False,
        "plan": {"name": "free", "space": 976562499, "collaborators": 0, "private_repos": 10000},
    }


def organization(urls: Urls, org: User, public_repos: int, private_repos: int, owner_view: bool) -> JSON:
    """``GET /orgs/{org}`` (organization-full). GitHub shows plan, billing and member policies only to the
    organisation's owners, so those members are present only with ``owner_view``. Profile fields the schema
    types as non-nullable strings (``company``, ``blog``, ``location``, ``email``) are left out rather than
    sent as null, as GitHub does for an organisation that never filled them in."""
    api = f"{urls.api}/orgs/{org.login}"
    body: JSON = {
        "login": org.login,
        "id": org.id,
        "node_id": org.node_id,
        "url": api,
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events",
        "hooks_url": f"{api}/hooks",
        "issues_url": f"{api}/issues",
        "members_url": f"{api}/members{{/member}}",
        "public_members_url": f"{api}/public_members{{/member}}",
        "avatar_url": f"{urls.base}/avatars/u/{org.id}",
        "description": None,
        "name": org.login,
        "twitter_username": None,
        "is_verified": False,
        "has_organization_projects": True,
        "has_repository_projects": True,
        "public_repos": public_repos,
        "public_gists": 0,
        "followers": 0,
        "following": 0,
        "html_url": f"{urls.web}/{org.login}",
        "type": "Organization",
        "created_at": iso(org.created_at),
        "updated_at": iso(org.created_at),
        "archived_at": None,
    }
    if owner_view:
        body.update(
            total_private_repos=private_repos,
            owned_private_repos=private_repos,
            private_gists=0,
            disk_usage=0,
            collaborators=0,
            billing_email=None,
            plan={"name": "free", "space": 976562499, "private_repos": 10000, "filled_seats": len(org.members),
                  "seats": len(org.members)},
            default_repository_permission="read",
            default_repository_branch="main",
            members_can_create_repositories=True,
            two_factor_requirement_enabled=False,
            members_allowed_repository_creation_type="all",
            members_can_create_public_repositories=True,
            members_can_create_private_repositories=True,
            members_can_create_internal_repositories=False,
            members_can_create_pages=True,
            members_can_fork_private_repositories=False,
            web_commit_signoff_required=False,
        )
    return body


def permissions(role: str) -> JSON:
    level = PERMISSION_LEVELS[role]
    return {name: level >= PERMISSION_LEVELS[name] for name in ("admin", "maintain", "push", "triage", "pull")}


def full_repository(urls: Urls, repo: Repo, role: str | None) -> JSON:
    """``GET /repos/{o}/{r}``; ``permissions`` only for an authenticated caller, as on GitHub."""
    api = urls.repo_api(repo)
    web = urls.repo_web(repo)
    size = sum(len(b) for b in repo.blobs.values()) // 1024
    body: JSON = {
        "id": repo.id,
        "node_id": repo.node_id,
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": simple_user(urls, repo.owner),
        "html_url": web,
        "description": repo.description,
        "fork": False,
        "url": api,
        "forks_url": f"{api}/forks",
        "keys_url": f"{api}/keys{{/key_id}}",
        "collaborators_url": f"{api}/collaborators{{/collaborator}}",
        "teams_url": f"{api}/teams",
        "hooks_url": f"{api}/hooks",
        "issue_events_url": f"{api}/issues/events{{/number}}",
        "events_url": f"{api}/events",
        "assignees_url": f"{api}/assignees{{/user}}",
        "branches_url": f"{api}/branches{{/branch}}",
        "tags_url": f"{api}/tags",
        "blobs_url": f"{api}/git/blobs{{/sha}}",
        "git_tags_url": f"{api}/git/tags{{/sha}}",
        "git_refs_url": f"{api}/git/refs{{/sha}}",
        "trees_url": f"{api}/git/trees{{/sha}}",
        "statuses_url": f"{api}/statuses/{{sha}}",
        "languages_url": f"{api}/languages",
        "stargazers_url": f"{api}/stargazers",
        "contributors_url": f"{api}/contributors",
        "subscribers_url": f"{api}/subscribers",
        "subscription_url": f"{api}/subscription",
        "commits_url": f"{api}/commits{{/sha}}",
        "git_commits_url": f"{api}/git/commits{{/sha}}",
        "comments_url": f"{api}/comments{{/number}}",
        "issue_comment_url": f"{api}/issues/comments{{/number}}",
        "contents_url": f"{api}/contents/{{+path}}",
        "compare_url": f"{api}/compare/{{base}}...{{head}}",
        "merges_url": f"{api}/merges",
        "archive_url": f"{api}/{{archive_format}}{{/ref}}",
        "downloads_url": f"{api}/downloads",
        "issues_url": f"{api}/issues{{/number}}",
        "pulls_url": f"{api}/pulls{{/number}}",
        "milestones_url": f"{api}/milestones{{/number}}",
        "notifications_url": f"{api}/notifications{{?since,all,participating}}",
        "labels_url": f"{api}/labels{{/name}}",
        "releases_url": f"{api}/releases{{/id}}",
        "deployments_url": f"{api}/deployments",
        "created_at": iso(repo.created_at),
        "updated_at": iso(repo.updated_at),
        "pushed_at": iso(repo.pushed_at),
        "git_url": f"git://{urls.base.split('://', 1)[1]}/{repo.full_name}.git",
        "ssh_url": f"git@{urls.base.split('://', 1)[1].split(':')[0]}:{repo.full_name}.git",
        "clone_url": f"{web}.git",
        "svn_url": web,
        "homepage": None,
        "size": size,
        "stargazers_count": 0,
        "watchers_count": 0,
        "language": None,
        "has_issues": True,
        "has_projects": True,
        "has_downloads": True,
        "has_wiki": True,
        "has_pages": False,
        "has_discussions": False,
        "forks_count": 0,
        "mirror_url": None,
        "archived": False,
        "disabled": False,
        "open_issues_count": 0,
        "license": None,
        "allow_forking": True,
        "is_template": False,
        "web_commit_signoff_required": False,
        "topics": [],
        "visibility": "private" if repo.private else "public",
        "forks": 0,
        "open_issues": 0,
        "watchers": 0,
        "default_branch": repo.default_branch,
        "network_count": 0,
        "subscribers_count": 1,
    }
    if role is not None:
        body["permissions"] = permissions(role)
    return body


def release_asset(urls: Urls, repo: Repo, release: Release, asset: Asset) -> JSON:
    return {
        "url": f"{urls.repo_api(repo)}/releases/assets/{asset.id}",
        "id": asset.id,
        "node_id": asset.node_id,
        "name": asset.name,
        "label": asset.label,
        "uploader": simple_user(urls, asset.uploader),
        "content_type": asset.content_type,
        "state": asset.state,
        "size": len(asset.data),
        "digest": asset.digest,
        "download_count": asset.download_count,
        "created_at": iso(asset.created_at),
        "updated_at": iso(asset.updated_at),
        "browser_download_url": (
            f"{urls.repo_web(repo)}/releases/download/{quote(release_web_tag(release), safe='')}/{quote(asset.name)}"
        ),
    }


def release_web_tag(release: Release) -> str:
    """Drafts have no tag yet: GitHub shows them under an ``untagged-<hex>`` placeholder."""
    return f"untagged-{release.id:020x}" if release.draft else release.tag_name


def release(urls: Urls, release: Release) -> JSON:
    repo = release.repo
    api = f"{urls.repo_api(repo)}/releases/{release.id}"
    tag = quote(release.tag_name, safe="")
    return {
        "url": api,
        "assets_url": f"{api}/assets",
        "upload_url": f"{urls.uploads}/repos/{repo.full_name}/releases/{release.id}/assets{{?name,label}}",
        "html_url": f"{urls.repo_web(repo)}/releases/tag/{quote(release_web_tag(release), safe='')}",
        "id": release.id,
        "author": simple_user(urls, release.author),
        "node_id": release.node_id,
        "tag_name": release.tag_name,
        "target_commitish": release.target_commitish,
        "name": release.name,
        "draft": release.draft,
        "immutable": False,
        "prerelease": release.prerelease,
        "created_at": iso(release.created_at),
        "updated_at": iso(release.updated_at),
        "published_at": None if release.published_at is None else iso(release.published_at),
        "assets": [release_asset(urls, repo, release, a) for a in release.assets],
        "tarball_url": None if release.draft else f"{urls.repo_api(repo)}/tarball/{tag}",
        "zipball_url": None if release.draft else f"{urls.repo_api(repo)}/zipball/{tag}",
        "body": release.body,
    }


def _content_urls(urls: Urls, repo: Repo, path: str, ref: str, sha: str, kind: str) -> JSON:
    quoted = quote(path)
    self_url = f"{urls.repo_api(repo)}/contents/{quoted}?ref={quote(ref, safe='')}"
    git_url = f"{urls.repo_api(repo)}/git/{'blobs' if kind == 'file' else 'trees'}/{sha}"
    html_url = f"{urls.repo_web(repo)}/{'blob' if kind == 'file' else 'tree'}/{quote(ref)}/{quoted}"
    return {
        "url": self_url,
        "html_url": html_url,
        "git_url": git_url,
        "download_url": f"{urls.base}/raw/{repo.full_name}/{quote(ref)}/{quoted}" if kind == "file" else None,
        "_links": {"self": self_url, "git": git_url, "html": html_url},
    }


def content_file(urls: Urls, repo: Repo, path: str, ref: str, sha: str, data: bytes) -> JSON:
    """A file: base64 ``content`` inline up to 1 MB, else ``encoding: "none"`` and empty ``content``."""
    inline = len(data) <= CONTENTS_INLINE_LIMIT
    return {
        "type": "file",
        "encoding": "base64" if inline else "none",
        "size": len(data),
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "content": base64_wrapped(data) if inline else "",
        "sha": sha,
        **_content_urls(urls, repo, path, ref, sha, "file"),
    }


def content_entry(urls: Urls, repo: Repo, path: str, ref: str, sha: str, size: int, kind: str) -> JSON:
    """One entry of a directory listing (no ``content``)."""
    return {
        "type": kind,
        "size": size,
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "sha": sha,
        **_content_urls(urls, repo, path, ref, sha, kind),
    }


def commit_summary(urls: Urls, repo: Repo, commit: Commit) -> JSON:
    """The ``commit`` member of a contents PUT/DELETE answer (file-commit)."""
    person = {"name": commit.author_name, "email": commit.author_email, "date": iso(commit.date)}
    return {
        "sha": commit.sha,
        "node_id": node_id("C", int(commit.sha[:12], 16)),
        "url": f"{urls.repo_api(repo)}/git/commits/{commit.sha}",
        "html_url": f"{urls.repo_web(repo)}/commit/{commit.sha}",
        "author": person,
        "committer": person,
        "message": commit.message,
        "tree": {"url": f"{urls.repo_api(repo)}/git/trees/{commit.tree_sha}", "sha": commit.tree_sha},
        "parents": [
            {"url": f"{urls.repo_api(repo)}/git/commits/{p}", "html_url": f"{urls.repo_web(repo)}/commit/{p}", "sha": p}
            for p in commit.parents
        ],
        "verification": {
            "verified": False,
            "reason": "unsigned",
            "signature": None,
            "payload": None,
            "verified_at": None,
        },
    }


def file_commit(urls: Urls, repo: Repo, commit: Commit, path: str, branch: str, deleted: bool) -> JSON:
    content = None
    if not deleted:
        sha = commit.tree[path]
        entry = content_entry(urls, repo, path, branch, sha, len(repo.blobs[sha]), "file")
        content = entry
    return {"content": content, "commit": commit_summary(urls, repo, commit)}


def full_commit(urls: Urls, repo: Repo, commit: Commit, author: User | None) -> JSON:
    """The ``commit`` schema (used inside branch-with-protection)."""
    api = f"{urls.repo_api(repo)}/commits/{commit.sha}"
    person = {"name": commit.author_name, "email": commit.author_email, "date": iso(commit.date)}
    return {
        "sha": commit.sha,
        "node_id": node_id("C", int(commit.sha[:12], 16)),
        "url": api,
        "html_url": f"{urls.repo_web(repo)}/commit/{commit.sha}",
        "comments_url": f"{api}/comments",
        "commit": {
            "url": f"{urls.repo_api(repo)}/git/commits/{commit.sha}",
            "author": person,
            "committer": person,
            "message": commit.message,
            "comment_count": 0,
            "tree": {"sha": commit.tree_sha, "url": f"{urls.repo_api(repo)}/git/trees/{commit.tree_sha}"},
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
                "verified_at": None,
            },
        },
        "author": simple_user(urls, author) if author is not None else None,
        "committer": simple_user(urls, author) if author is not None else None,
        "parents": [
            {"sha": p, "url": f"{urls.repo_api(repo)}/commits/{p}", "html_url": f"{urls.repo_web(repo)}/commit/{p}"}
            for p in commit.parents
        ],
    }


def branch_with_protection(urls: Urls, repo: Repo, name: str, commit: Commit, author: User | None) -> JSON:
    api = f"{urls.repo_api(repo)}/branches/{quote(name)}"
    return {
        "name": name,
        "commit": full_commit(urls, repo, commit, author),
        "_links": {"self": api, "html": f"{urls.repo_web(repo)}/tree/{quote(name)}"},
        "protected": False,
        "protection": {
            "enabled": False,
            "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []},
        },
        "protection_url": f"{api}/protection",
    }


def short_branch(urls: Urls, repo: Repo, name: str, sha: str) -> JSON:
    return {
        "name": name,
        "commit": {"sha": sha, "url": f"{urls.repo_api(repo)}/commits/{sha}"},
        "protected": False,
    }


def git_ref(urls: Urls, repo: Repo, ref: str, sha: str) -> JSON:
    kind = "commit"
    return {
        "ref": ref,
        "node_id": node_id("REF", int(sha[:12], 16)),
        "url": f"{urls.repo_api(repo)}/git/{quote(ref)}",
        "object": {"type": kind, "sha": sha, "url": f"{urls.repo_api(repo)}/git/commits/{sha}"},
    }


def blob(urls: Urls, repo: Repo, sha: str, data: bytes) -> JSON:
    return {
        "sha": sha,
        "node_id": node_id("B", int(sha[:12], 16)),
        "size": len(data),
        "url": f"{urls.repo_api(repo)}/git/blobs/{sha}",
        "content": base64_wrapped(data),
        "encoding": "base64",
    }


def rate_limit(limit: int, remaining: int, reset: int, used: int) -> JSON:
    core = {"limit": limit, "remaining": remaining, "reset": reset, "used": used, "resource": "core"}
    other = {"limit": 30, "remaining": 30, "reset": reset, "used": 0}
    return {
        "resources": {
            "core": core,
            "search": {**other, "resource": "search"},
            "graphql": {"limit": 5000, "remaining": 5000, "reset": reset, "used": 0, "resource": "graphql"},
        },
        "rate": core,
    }


def collaborator_permission(urls: Urls, user: User, role: str | None) -> JSON:
    """``GET /collaborators/{u}/permission``: GitHub's legacy ``permission`` folds roles to admin/write/read/none."""
    legacy = {"admin": "admin", "maintain": "write", "push": "write", "triage": "read", "pull": "read"}
    role_name = {"admin": "admin", "maintain": "maintain", "push": "write", "triage": "triage", "pull": "read"}
    return {
        "permission": legacy.get(role or "", "none"),
        "role_name": role_name.get(role or "", "none"),
        "user": {
            **simple_user(urls, user),
            "permissions": permissions(role)
            if role
            else dict.fromkeys(("admin", "maintain", "push", "triage", "pull"), False),
            "role_name": role_name.get(role or "", "none"),
        },
    }


def root(urls: Urls) -> JSON:
    """``GET /``: the hypermedia index of URL templates."""
    a = urls.api
    return {
        "current_user_url": f"{a}/user",
        "current_user_authorizations_html_url": f"{urls.web}/settings/connections/applications{{/client_id}}",
        "authorizations_url": f"{a}/authorizations",
        "code_search_url": f"{a}/search/code?q={{query}}{{&page,per_page,sort,order}}",
        "commit_search_url": f"{a}/search/commits?q={{query}}{{&page,per_page,sort,order}}",
        "emails_url": f"{a}/user/emails",
        "emojis_url": f"{a}/emojis",
        "events_url": f"{a}/events",
        "feeds_url": f"{a}/feeds",
        "followers_url": f"{a}/user/followers",
        "following_url": f"{a}/user/following{{/target}}",
        "gists_url": f"{a}/gists{{/gist_id}}",
        "hub_url": f"{a}/hub",
        "issue_search_url": f"{a}/search/issues?q={{query}}{{&page,per_page,sort,order}}",
        "issues_url": f"{a}/issues",
        "keys_url": f"{a}/user/keys",
        "label_search_url": f"{a}/search/labels?q={{query}}&repository_id={{repository_id}}{{&page,per_page}}",
        "notifications_url": f"{a}/notifications",
        "organization_url": f"{a}/orgs/{{org}}",
        "organization_repositories_url": f"{a}/orgs/{{org}}/repos{{?type,page,per_page,sort}}",
        "organization_teams_url": f"{a}/orgs/{{org}}/teams",
        "public_gists_url": f"{a}/gists/public",
        "rate_limit_url": f"{a}/rate_limit",
        "repository_url": f"{a}/repos/{{owner}}/{{repo}}",
        "repository_search_url": f"{a}/search/repositories?q={{query}}{{&page,per_page,sort,order}}",
        "current_user_repositories_url": f"{a}/user/repos{{?type,page,per_page,sort}}",
        "starred_url": f"{a}/user/starred{{/owner}}{{/repo}}",
        "starred_gists_url": f"{a}/gists/starred",
        "topic_search_url": f"{a}/search/topics?q={{query}}{{&page,per_page}}",
        "user_url": f"{a}/users/{{user}}",
        "user_organizations_url": f"{a}/user/orgs",
        "user_repositories_url": f"{a}/users/{{user}}/repos{{?type,page,per_page,sort}}",
        "user_search_url": f"{a}/search/users?q={{query}}{{&page,per_page,sort,order}}",
    }
