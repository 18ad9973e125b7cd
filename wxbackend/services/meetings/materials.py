"""Meeting materials in GridFS: checked by their bytes, capped in count and size."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from models import meetings as meetings_model
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, InvalidInput, NotFound
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings.planning import view

# -- materials (GridFS) -----------------------------------------------------------------

# Leading bytes of each allowed type: the extension alone is a claim, not a fact.
SIGNATURES = {
    "pdf": (b"%PDF-",), "png": (b"\x89PNG\r\n\x1a\n",), "jpg": (b"\xff\xd8\xff",),
    "jpeg": (b"\xff\xd8\xff",), "docx": (b"PK\x03\x04",), "xlsx": (b"PK\x03\x04",),
    "pptx": (b"PK\x03\x04",), "doc": (b"\xd0\xcf\x11\xe0",), "xls": (b"\xd0\xcf\x11\xe0",),
    "ppt": (b"\xd0\xcf\x11\xe0",),
}
CONTENT_TYPES = {
    "pdf": "application/pdf", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
    "txt": "text/plain; charset=utf-8", "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xls": "application/vnd.ms-excel",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt": "application/vnd.ms-powerpoint",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}


def check_material(ctx: AppContext, name: str, data: bytes) -> tuple[str, str]:
    """(clean file name, content type) of an acceptable upload, else InvalidInput."""
    settings = ctx.settings.meetings
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()[:120]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    allowed = {t.strip().lower() for t in settings.material_types.split(",") if t.strip()}
    if not name or ext not in allowed:
        raise InvalidInput("material_type_not_allowed",
                           f"不支持该文件类型，允许：{'、'.join(sorted(allowed))}")
    if len(data) > settings.material_max_bytes:
        limit = settings.material_max_bytes / 1024 / 1024
        raise DomainError("material_too_large", f"文件超过大小上限（{limit:.1f} MB）", status=413)
    if not data:
        raise InvalidInput("material_empty", "文件是空的")
    if ext in SIGNATURES and not data.startswith(SIGNATURES[ext]):
        raise InvalidInput("material_type_mismatch", "文件内容与扩展名不符")
    if ext == "txt":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("material_type_mismatch", "文本文件应为 UTF-8 编码") from None
    return name, CONTENT_TYPES.get(ext, "application/octet-stream")


async def add_material(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId, name: str,
                       data: bytes) -> dict[str, Any]:
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    name, content_type = check_material(ctx, name, data)
    limit = ctx.settings.meetings.material_max_count
    if meeting["status"] == "cancelled":
        raise Conflict("meeting_cancelled", "会议已取消")
    file_id = await meetings_model.put_file(ctx.db, name, data, content_type,
                                            {"meeting_id": meeting["_id"], "kind": "material"})
    entry = {"file_id": file_id, "name": name, "size": len(data), "content_type": content_type,
             "uploaded_at": ctx.clock.now()}
    # The slot test sits in the filter, so two racing uploads cannot pass the cap.
    added = await meetings_model.update_one_if(
        ctx.db, meeting["_id"],
        {"status": {"$ne": "cancelled"}, f"materials.{limit - 1}": {"$exists": False}},
        {"$push": {"materials": entry}})
    if not added:
        await meetings_model.delete_file(ctx.db, file_id)
        raise Conflict("too_many_materials", f"每次会议最多上传{limit}个材料")
    await audit.record(ctx, actor, "meeting.material_add", "meeting", meeting["_id"], meeting["title"],
                       meeting["org_ancestors"], {"file": name, "size": len(data)})
    return entry


async def remove_material(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId,
                          file_id: str | ObjectId) -> None:
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    entry = material_of(meeting, file_id)
    removed = await meetings_model.update_one_if(ctx.db, meeting["_id"], {"materials.file_id": entry["file_id"]},
                                                 {"$pull": {"materials": {"file_id": entry["file_id"]}}})
    if removed:
        await meetings_model.delete_file(ctx.db, entry["file_id"])
        await audit.record(ctx, actor, "meeting.material_remove", "meeting", meeting["_id"],
                           meeting["title"], meeting["org_ancestors"], {"file": entry["name"]})


def material_of(meeting: dict[str, Any], file_id: str | ObjectId) -> dict[str, Any]:
    """The meeting's own material entry: a file id of another meeting is not found here."""
    for entry in meeting.get("materials") or []:
        if str(entry["file_id"]) == str(file_id):
            return entry
    raise NotFound("material_not_found", "找不到该会议材料")


async def open_material(ctx: AppContext, meeting: dict[str, Any],
                        file_id: str | ObjectId) -> tuple[dict[str, Any], Any]:
    """(entry, GridFS stream) of a material of ``meeting``; access is checked by the caller."""
    entry = material_of(meeting, file_id)
    stream = await meetings_model.open_file(ctx.db, entry["file_id"])
    if stream is None:
        raise NotFound("material_not_found", "找不到该会议材料")
    return entry, stream
