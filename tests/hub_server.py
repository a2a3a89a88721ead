"""A tiny Hugging Face Hub-compatible HTTP server on loopback, for testing uploads and downloads without network.

It answers the endpoints the real ``huggingface_hub`` and ``transformers`` clients call to create a repository,
list repositories (``HfApi.list_models``: ``search``, ``author``, ``filter`` on tags, ``expand``/``full``, with the tags
the Hub derives from a card's metadata, ``base_model:<id>`` and ``base_model:<relation>:<id>`` included),
validate a model card, commit files (inline, base64 in the NDJSON body, for files ``preupload`` calls ``"regular"``;
through the Git LFS batch API and a PUT for files of at least ``lfs_threshold`` bytes, which it calls ``"lfs"``: the
client's LFS path, with Xet disabled, as the real Hub serves clients without Xet), create a branch, read repository info and file trees, and download files
(``resolve`` with ``X-Repo-Commit`` and ``ETag``). Every commit is a snapshot of the whole repository stored under a
temporary directory, so earlier revisions stay readable by their commit hash.

Only what the clients need is modelled: one user, any token accepted, private repositories hidden from requests
without a token. The server listens on 127.0.0.1 only, reads exactly ``Content-Length`` bytes per request and times
out idle connections, so a misbehaving client cannot hang a test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LOOPBACK = "127.0.0.1"
USER = "tester"
MAX_BODY_BYTES = 256 * 1024 * 1024
FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\n(.*?)\n---[ \t]*(\n|\Z)", flags=re.S)  # a README's YAML metadata


def git_blob_sha(content: bytes) -> str:
    """The object id git (and the Hub) gives a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, dict[str, str]] = field(default_factory=dict)  # commit sha -> {path: blob sha}


class HubState:
    """Repositories and their commits; file contents live on disk as blobs named by their git sha."""

    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.repos: dict[str, Repo] = {}
        self.lock = threading.Lock()
        self.lfs_objects = root / "lfs"  # uploaded LFS objects, named by their sha256, until a commit adds them
        self.lfs_objects.mkdir(exist_ok=True)

    def create(self, repo_id: str, private: bool) -> bool:
        with self.lock:
            if repo_id in self.repos:
                return False
            empty = hashlib.sha1(f"init {repo_id}".encode()).hexdigest()
            self.repos[repo_id] = Repo(private=private, branches={"main": empty}, commits={empty: {}})
            return True

    def resolve(self, repo: Repo, revision: str) -> str | None:
        """Commit sha of a branch name or of a (full) commit sha."""
        if revision in repo.branches:
            return repo.branches[revision]
        return revision if revision in repo.commits else None

    def commit(self, repo: Repo, branch: str, added: dict[str, bytes], deleted: list[str], message: str) -> str:
        with self.lock:
            parent = repo.branches[branch]
            files = dict(repo.commits[parent])
            for path in deleted:
                files.pop(path, None)
            for path, content in added.items():
                sha = git_blob_sha(content)
                (self.blobs / sha).write_bytes(content)
                files[path] = sha
            listing = json.dumps(sorted(files.items())).encode()
            commit = hashlib.sha1(parent.encode() + message.encode() + listing).hexdigest()
            repo.commits[commit] = files
            repo.branches[branch] = commit
            return commit

    def read(self, blob: str) -> bytes:
        return (self.blobs / blob).read_bytes()


class HubRequestHandler(BaseHTTPRequestHandler):
    server: LocalHubServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds an idle keep-alive connection may hold a thread

    def log_message(self, format, *args):  # keep test output quiet
        pass

    # ------------------------------------------------------------------------------------------------------------
    # Plumbing

    @property
    def state(self) -> HubState:
        return self.server.state

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError(f"request body of {length} bytes is over the test server's limit")
        return self.rfile.read(length) if length else b""

    def send(self, status: int, payload=None, headers: dict | None = None, raw: bytes | None = None, head=False):
        data = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def error(self, status: int, code: str, message: str, head=False):
        self.send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message}, head=head)

    def authorized(self) -> bool:
        return self.headers.get("Authorization", "").startswith("Bearer ")

    def find_repo(self, repo_id: str, head=False) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and not self.authorized()):
            self.error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}", head=head)
            return None
        return repo

    def find_commit(self, repo: Repo, revision: str, head=False) -> str | None:
        commit = self.state.resolve(repo, revision)
        if commit is None:
            self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
        return commit

    def segments(self) -> list[str]:
        return [unquote(part) for part in urlsplit(self.path).path.strip("/").split("/")]

    # ------------------------------------------------------------------------------------------------------------
    # Routes

    def do_GET(self):
        self.route_read(head=False)

    def do_HEAD(self):
        self.route_read(head=True)

    def route_read(self, head: bool):
        parts = self.segments()
        if parts == ["api", "models"]:
            return self.list_models(head)
        if parts[:2] == ["api", "whoami-v2"]:
            return self.send(200, {"type": "user", "name": USER, "auth": {}}, head=head)
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            if not rest:
                return self.model_info(repo_id, "main", head)
            if rest[0] == "revision" and len(rest) >= 2:
                return self.model_info(repo_id, "/".join(rest[1:]), head)
            if rest[0] == "tree" and len(rest) >= 2:
                return self.tree(repo_id, rest[1], "/".join(rest[2:]), head)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve_file(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
        self.error(404, "NotFound", f"{self.command} {self.path} is not served by the test Hub", head=head)

    def do_POST(self):
        parts, body = self.segments(), self.body()
        if len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            return self.lfs_batch(f"{parts[0]}/{parts[1].removesuffix('.git')}", json.loads(body))
        if parts == ["api", "repos", "create"]:
            return self.create_repo(json.loads(body))
        if parts == ["api", "validate-yaml"]:
            report = validate_metadata(json.loads(body)["content"])
            return self.send(400 if report["errors"] else 200, report)
        if len(parts) >= 6 and parts[:2] == ["api", "models"]:
            repo_id, action, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            repo = self.find_repo(repo_id)
            if repo is None:
                return
            if action == "preupload":
                files = json.loads(body)["files"]
                listing = [{"path": f["path"], "uploadMode": self.upload_mode(f), "shouldIgnore": False} for f in files]
                return self.send(200, {"files": listing, "commitOid": repo.branches.get(revision)})
            if action == "commit":
                return self.commit(repo_id, repo, revision, body)
            if action == "branch":
                return self.create_branch(repo, revision, json.loads(body) if body else {})
        self.error(404, "NotFound", f"POST {self.path} is not served by the test Hub")

    # ------------------------------------------------------------------------------------------------------------
    # Git LFS: the batch API answers with a "basic" upload action (a PUT to this server), the PUT stores the object
    # under its sha256, and a commit's "lfsFile" entry adds it to the repository.

    def upload_mode(self, file: dict) -> str:
        return "lfs" if int(file.get("size", 0)) >= self.server.lfs_threshold else "regular"

    def lfs_batch(self, repo_id: str, request: dict):
        if self.find_repo(repo_id) is None:
            return
        if request.get("operation") != "upload" or "basic" not in request.get("transfers", ["basic"]):
            return self.error(400, "BadRequest", "the test Hub takes basic LFS uploads only")
        objects = []
        for item in request["objects"]:
            answer = {"oid": item["oid"], "size": item["size"]}
            if not (self.state.lfs_objects / item["oid"]).is_file():
                answer["actions"] = {"upload": {"href": f"{self.server.endpoint}/lfs-upload/{item['oid']}"}}
            objects.append(answer)
        self.send(200, {"transfer": "basic", "objects": objects})

    def do_PUT(self):
        parts, body = self.segments(), self.body()
        if len(parts) != 2 or parts[0] != "lfs-upload":
            return self.error(404, "NotFound", f"PUT {self.path} is not served by the test Hub")
        if hashlib.sha256(body).hexdigest() != parts[1]:
            return self.error(400, "BadRequest", "the uploaded bytes do not match their sha256")
        (self.state.lfs_objects / parts[1]).write_bytes(body)
        self.server.lfs_uploads.append(parts[1])
        self.send(200, {})

    def lfs_object(self, value: dict) -> bytes | None:
        path = self.state.lfs_objects / str(value.get("oid"))
        if value.get("algo", "sha256") != "sha256" or not path.is_file():
            return None
        return path.read_bytes()

    def create_repo(self, request: dict):
        if request.get("type", "model") not in (None, "model"):
            return self.error(400, "BadRequest", "the test Hub serves model repositories only")
        repo_id = f"{request.get('organization') or USER}/{request['name']}"
        # huggingface_hub 2.x sends "visibility"; older clients send "private".
        private = request.get("visibility") == "private" or bool(request.get("private"))
        url = f"{self.server.endpoint}/{repo_id}"
        if not self.state.create(repo_id, private):  # the Hub names the existing repo in its 409 answer too
            message = "You already created this model repo"
            return self.send(
                409, {"error": message, "url": url}, {"X-Error-Code": "RepoExists", "X-Error-Message": message}
            )
        self.send(200, {"url": url, "name": repo_id})

    def create_branch(self, repo: Repo, branch: str, request: dict):
        if branch in repo.branches:
            return self.error(409, "BranchExists", f"Reference already exists: refs/heads/{branch}")
        start = self.find_commit(repo, request.get("startingPoint") or "main")
        if start is not None:
            repo.branches[branch] = start
            self.send(200, {})

    def commit(self, repo_id: str, repo: Repo, branch: str, body: bytes):
        if branch not in repo.branches:
            return self.error(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        added, deleted, message = {}, [], ""
        for line in body.decode().splitlines()[:100_000]:
            if not line.strip():
                continue
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                message = value.get("summary", "")
            elif item["key"] == "file":
                if value.get("encoding") != "base64":
                    return self.error(400, "BadRequest", "the test Hub takes inline base64 files only")
                added[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                content = self.lfs_object(value)
                if content is None:
                    return self.error(400, "BadRequest", f"LFS object {value.get('oid')} was not uploaded")
                added[value["path"]] = content
            elif item["key"] == "deletedFile":
                deleted.append(value["path"])
            else:
                return self.error(400, "BadRequest", f"the test Hub does not take {item['key']!r} operations")
        commit = self.state.commit(repo, branch, added, deleted, message)
        url = f"{self.server.endpoint}/{repo_id}/commit/{commit}"
        self.send(200, {"commitUrl": url, "commitOid": commit, "commitMessage": message, "pullRequestUrl": None})

    def model_info(self, repo_id: str, revision: str, head: bool):
        repo = self.find_repo(repo_id, head)
        commit = repo and self.find_commit(repo, revision, head)
        if commit is None:
            return
        files = repo.commits[commit]
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit,
            "private": repo.private,
            "siblings": [{"rfilename": path} for path in sorted(files)],
        }
        self.send(200, info, head=head)

    def list_models(self, head: bool):
        """``GET /api/models``: the repositories matching every ``filter`` tag, ``author`` and ``search``, with the
        fields ``expand`` names (or all of them with ``full``)."""
        query = parse_qs(urlsplit(self.path).query)
        filters, expand = query.get("filter", []), query.get("expand", [])
        author, search = query.get("author", [None])[0], query.get("search", [None])[0]
        full = query.get("full", ["False"])[0].lower() == "true"
        listing = []
        for repo_id, repo in sorted(self.state.repos.items()):
            if repo.private and not self.authorized():
                continue
            if (author and repo_id.split("/")[0] != author) or (search and search.lower() not in repo_id.lower()):
                continue
            files = repo.commits[repo.branches["main"]]
            card = card_metadata(self.state.read(files["README.md"]).decode()) if "README.md" in files else {}
            tags = hub_tags(card)
            if not set(filters) <= set(tags):
                continue
            fields = {
                "id": repo_id,
                "private": repo.private,
                "tags": tags,
                "library_name": card.get("library_name"),
                "pipeline_tag": card.get("pipeline_tag"),
                "lastModified": last_modified(self.state, files),
                "cardData": card,
                "safetensors": safetensors_info(self.state, files),
                "siblings": [{"rfilename": path} for path in sorted(files)],
                "sha": repo.branches["main"],
            }
            wanted = set(fields) if full else {"id", *expand} if expand else {"id", "private", "tags", "library_name"}
            listing.append({key: value for key, value in fields.items() if key in wanted})
        self.send(200, listing, head=head)

    def tree(self, repo_id: str, revision: str, folder: str, head: bool):
        repo = self.find_repo(repo_id, head)
        commit = repo and self.find_commit(repo, revision, head)
        if commit is None:
            return
        prefix = f"{folder.rstrip('/')}/" if folder else ""
        entries = [
            {"type": "file", "path": path, "oid": blob, "size": (self.state.blobs / blob).stat().st_size}
            for path, blob in sorted(repo.commits[commit].items())
            if path.startswith(prefix)
        ]
        self.send(200, entries, head=head)

    def resolve_file(self, repo_id: str, revision: str, path: str, head: bool):
        repo = self.find_repo(repo_id, head)
        commit = repo and self.find_commit(repo, revision, head)
        if commit is None:
            return
        blob = repo.commits[commit].get(path)
        if blob is None:
            return self.error(404, "EntryNotFound", f"{path} does not exist at {revision}", head=head)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{blob}"'}
        self.send(200, headers=headers, raw=self.state.read(blob), head=head)


def card_metadata(content: str) -> dict:
    """The YAML front matter of a README (``{}`` when there is none or it is not a mapping)."""
    front_matter = FRONT_MATTER.match(content)
    metadata = yaml.safe_load(front_matter.group(1)) if front_matter else None
    return metadata if isinstance(metadata, dict) else {}


def hub_tags(card: dict) -> list[str]:
    """The tags the Hub gives a repository from its card: the card's tags, its library, ``dataset:<id>``,
    ``license:<id>`` and, per base model, ``base_model:<id>`` and ``base_model:<relation>:<id>``."""

    def as_list(value):
        return [value] if isinstance(value, str) else list(value or [])

    tags = as_list(card.get("tags")) + as_list(card.get("library_name")) + as_list(card.get("pipeline_tag"))
    tags += [f"dataset:{name}" for name in as_list(card.get("datasets"))]
    tags += [f"license:{name}" for name in as_list(card.get("license"))]
    for base_model in as_list(card.get("base_model")):
        tags.append(f"base_model:{base_model}")
        if card.get("base_model_relation"):
            tags.append(f"base_model:{card['base_model_relation']}:{base_model}")
    return list(dict.fromkeys(tags))


def last_modified(state: HubState, files: dict[str, str]) -> str | None:
    """When the newest file of a commit was written (blobs are written at commit time), in the Hub's format."""
    times = [(state.blobs / blob).stat().st_mtime for blob in files.values()]
    if not times:
        return None
    return datetime.fromtimestamp(max(times), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def safetensors_info(state: HubState, files: dict[str, str]) -> dict | None:
    """Parameter counts per dtype of ``model.safetensors``, read from its header as the Hub does."""
    if "model.safetensors" not in files:
        return None
    content = state.read(files["model.safetensors"])
    header = json.loads(content[8 : 8 + int.from_bytes(content[:8], "little")])
    parameters: dict[str, int] = {}
    for name, tensor in header.items():
        if name != "__metadata__":
            count = 1
            for size in tensor["shape"]:
                count *= size
            parameters[tensor["dtype"]] = parameters.get(tensor["dtype"], 0) + count
    return {"parameters": parameters, "total": sum(parameters.values())}


def validate_metadata(content: str) -> dict:
    """A local stand-in for the Hub's check of a README's metadata (its ``---`` front matter): the YAML must be a
    mapping and any ``model-index`` must be shaped as the Hub reads it (a named model with results of a task type, a
    dataset and typed numeric metrics)."""
    front_matter = FRONT_MATTER.match(content)
    if front_matter is None:
        return {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
    try:
        metadata = yaml.safe_load(front_matter.group(1))
    except yaml.YAMLError as error:
        return {"errors": [{"message": f"invalid YAML: {error}"}], "warnings": []}
    if not isinstance(metadata, dict):
        return {"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []}
    errors = []
    for entry in metadata.get("model-index") or []:
        if not entry.get("name"):
            errors.append("model-index entries need a name")
        for result in entry.get("results", []):
            if not result.get("task", {}).get("type"):
                errors.append("model-index results need task.type")
            if not {"name", "type"} <= set(result.get("dataset", {})):
                errors.append("model-index results need dataset.name and dataset.type")
            for metric in result.get("metrics", []):
                if "type" not in metric or not isinstance(metric.get("value"), (int, float)):
                    errors.append("model-index metrics need a type and a numeric value")
    for key in ("tags", "datasets"):
        if key in metadata and not isinstance(metadata[key], list):
            errors.append(f"{key} must be a list")
    return {"errors": [{"message": message} for message in errors], "warnings": []}


class LocalHubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, lfs_threshold: int = 10 * 1024 * 1024):
        super().__init__((LOOPBACK, 0), HubRequestHandler)  # port 0: a free port chosen by the OS
        self.state = HubState(root)
        self.lfs_threshold = lfs_threshold  # files of at least this many bytes go through LFS (the Hub's: 10 MiB)
        self.lfs_uploads: list[str] = []  # sha256 of every LFS object uploaded, in order
        host, port = self.server_address[:2]
        assert host == LOOPBACK, f"the test Hub must listen on loopback only, got {host}"
        self.endpoint = f"http://{host}:{port}"

    def __enter__(self):
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)
        shutil.rmtree(self.state.root, ignore_errors=True)
