// The people page: search and page through the watchlist; operators enroll people, edit their
// details, delete them and add or remove their photos. Viewers see everything read-only.

import { api, el, formatTime, hasRole, showError } from "./api.js";
import { setUpNav } from "./nav.js";

setUpNav();
const PER_PAGE = 20;
const operator = hasRole("operator");
const search = document.getElementById("people-search");
const body = document.querySelector("#people tbody");
const empty = document.getElementById("people-empty");
const pager = document.getElementById("people-pager");
const enroll = document.getElementById("enroll");
const dialog = document.getElementById("person-dialog");
const personForm = document.getElementById("person-form");
let page = 1;
let total = 0;
let current = null; // the person open in the dialog

const field = (form, name) => form.querySelector(`[name="${name}"]`);

function rejectedList(rejected) {
  if (!rejected || !rejected.length) return "";
  return el(
    "ul",
    { class: "rejected" },
    rejected.map((r) => el("li", {}, `${r.image}: ${r.reason}${r.detail ? ` (${r.detail})` : ""}`)),
  );
}

function row(person) {
  return el(
    "tr",
    { dataset: { id: person.id } },
    el("td", {}, el("strong", {}, person.name)),
    el("td", {}, person.age ?? "—"),
    el("td", {}, person.gender || "—"),
    el("td", {}, person.address || "—"),
    el("td", {}, String(person.face_count ?? "")),
    el("td", { class: "muted" }, formatTime(person.updated_at)),
    el("td", { class: "actions" }, el("button", { type: "button", onclick: () => open(person.id) }, operator ? "Edit" : "View")),
  );
}

async function load() {
  const query = new URLSearchParams({ page: String(page), per_page: String(PER_PAGE) });
  const text = field(search, "search").value.trim();
  if (text) query.set("search", text);
  const result = await api(`/api/people?${query}`);
  total = result.total ?? result.items.length;
  body.replaceChildren(...result.items.map(row));
  empty.hidden = result.items.length > 0;
  const pages = Math.max(1, Math.ceil(total / PER_PAGE));
  pager.querySelector(".where").textContent = `Page ${page} of ${pages} · ${total} people`;
  pager.querySelector('[data-go="prev"]').disabled = page <= 1;
  pager.querySelector('[data-go="next"]').disabled = page >= pages;
}

search.addEventListener("submit", (event) => {
  event.preventDefault();
  page = 1;
  load();
});
pager.addEventListener("click", (event) => {
  const go = event.target.dataset?.go;
  if (go === "prev" && page > 1) page -= 1;
  else if (go === "next") page += 1;
  else return;
  load();
});

function details(form) {
  const age = field(form, "age").value;
  return {
    name: field(form, "name").value.trim(),
    age: age === "" ? null : Number(age),
    gender: field(form, "gender").value.trim() || null,
    address: field(form, "address").value.trim() || null,
  };
}

enroll.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = enroll.querySelector(".error");
  const result = enroll.querySelector(".result");
  const form = new FormData();
  for (const [key, value] of Object.entries(details(enroll))) {
    if (value !== null) form.set(key, String(value));
  }
  if (field(enroll, "largest").checked) form.set("largest", "true");
  for (const file of field(enroll, "photos").files) form.append("photos", file, file.name);
  try {
    const answer = await api("/api/people", { method: "POST", form });
    showError(error, null);
    result.replaceChildren(
      el("p", {}, `Enrolled ${answer.person.name} with ${answer.accepted.length} photo(s).`),
      rejectedList(answer.rejected),
    );
    enroll.reset();
    load();
  } catch (failure) {
    showError(error, failure);
    result.replaceChildren(rejectedList(failure.details?.rejected));
  }
});

async function showPhotos() {
  const holder = personForm.querySelector(".photos");
  const faces = await api(`/api/people/${current.id}/faces`);
  holder.replaceChildren(
    ...faces.items.map((face) =>
      el(
        "figure",
        { dataset: { face: face.id } },
        el("img", { src: face.image_url || `/api/faces/${face.id}/image`, alt: `photo ${face.id}` }),
        operator && faces.items.length > 1
          ? el("button", { type: "button", class: "danger", onclick: () => removePhoto(face.id) }, "Remove")
          : "",
      ),
    ),
  );
}

async function removePhoto(faceId) {
  const error = personForm.querySelector(".error");
  try {
    await api(`/api/people/${current.id}/faces/${faceId}`, { method: "DELETE" });
    showError(error, null);
    await showPhotos();
    load();
  } catch (failure) {
    showError(error, failure);
  }
}

async function open(personId) {
  current = await api(`/api/people/${personId}`);
  personForm.querySelector(".title").textContent = current.name;
  field(personForm, "name").value = current.name;
  field(personForm, "age").value = current.age ?? "";
  field(personForm, "gender").value = current.gender || "";
  field(personForm, "address").value = current.address || "";
  for (const input of personForm.querySelectorAll(".fields input")) input.readOnly = !operator;
  showError(personForm.querySelector(".error"), null);
  personForm.querySelector(".result").replaceChildren();
  dialog.showModal();
  await showPhotos();
}

personForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = personForm.querySelector(".error");
  try {
    current = await api(`/api/people/${current.id}`, { method: "PATCH", json: details(personForm) });
    personForm.querySelector(".title").textContent = current.name;
    showError(error, null);
    personForm.querySelector(".result").replaceChildren(el("p", {}, "Saved."));
    load();
  } catch (failure) {
    showError(error, failure);
  }
});

personForm.addEventListener("click", async (event) => {
  const act = event.target.dataset?.act;
  if (act === "close") dialog.close();
  if (act === "delete" && confirm(`Delete ${current.name} and all their photos?`)) {
    try {
      await api(`/api/people/${current.id}`, { method: "DELETE" });
      dialog.close();
      load();
    } catch (failure) {
      showError(personForm.querySelector(".error"), failure);
    }
  }
});

field(personForm, "more-photos").addEventListener("change", async (event) => {
  const files = event.target.files;
  if (!files.length) return;
  const form = new FormData();
  for (const file of files) form.append("photos", file, file.name);
  const error = personForm.querySelector(".error");
  try {
    const answer = await api(`/api/people/${current.id}/faces`, { method: "POST", form });
    showError(error, null);
    personForm
      .querySelector(".result")
      .replaceChildren(el("p", {}, `Added ${answer.accepted?.length ?? 0} photo(s).`), rejectedList(answer.rejected));
    await showPhotos();
    load();
  } catch (failure) {
    showError(error, failure);
    personForm.querySelector(".result").replaceChildren(rejectedList(failure.details?.rejected));
  }
  event.target.value = "";
});

load().catch((failure) => showError(enroll.querySelector(".error"), failure));
