// The login page: post the user name and password, then go where the user was going.

import { errorMessage, nextTarget, postJson, showError } from "./auth_form.js";

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");
const submit = document.getElementById("login-submit");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const username = form.elements.username.value.trim();
  const password = form.elements.password.value;
  if (!username || !password) {
    showError(error, "enter your user name and password");
    return;
  }
  showError(error, "");
  submit.disabled = true;
  try {
    const answer = await postJson("/api/auth/login", { username, password });
    if (answer.ok) {
      location.assign(nextTarget());
      return;
    }
    showError(error, errorMessage(answer));
    form.elements.password.select();
  } catch {
    showError(error, "the server cannot be reached; try again");
  } finally {
    submit.disabled = false;
  }
});
