// The first-run page: create the first admin (password typed twice); the server logs them in.

import { errorMessage, postJson, showError } from "./auth_form.js";

const form = document.getElementById("setup-form");
const error = document.getElementById("setup-error");
const submit = document.getElementById("setup-submit");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const username = form.elements.username.value.trim();
  const password = form.elements.password.value;
  if (!username || !password) {
    showError(error, "choose a user name and a password");
    return;
  }
  if (password !== form.elements.password2.value) {
    showError(error, "the two passwords differ");
    form.elements.password2.select();
    return;
  }
  showError(error, "");
  submit.disabled = true;
  try {
    const answer = await postJson("/api/setup", { username, password });
    if (answer.ok) {
      location.assign("/");
      return;
    }
    if (answer.status === 409) {
      // Someone finished the setup first: this account was not created, log in instead.
      location.assign("/login");
      return;
    }
    showError(error, errorMessage(answer));
  } catch {
    showError(error, "the server cannot be reached; try again");
  } finally {
    submit.disabled = false;
  }
});
